#!/usr/bin/env bash
# Run Go test binaries for Windows under Wine.
#
#   .ci/wine.sh <pkg-dir>...      e.g.  .ci/wine.sh ./internal/npipe ./internal/winproc
#
# For each package: GOOS=windows GOARCH=amd64 go test -c, then
# `wine pkg.test.exe -test.v -test.timeout 5m` from a fresh writable working
# directory. Extra test flags can be given in WINE_TEST_FLAGS (e.g.
# WINE_TEST_FLAGS='-test.run TestFoo'). Exits non-zero if any package fails
# to build or its tests fail; ends with a "wine: N passed, N failed, N skipped"
# line counting the individual tests (subtests included).
#
# Setup, all idempotent and local to this run:
#   - installs Debian's wine, wine64 and binutils-mingw-w64-x86-64 if missing
#     (apt-get update only when something has to be installed);
#   - creates a fresh WINEPREFIX in a temp dir (wineboot --init; wineserver -w),
#     removed again on exit;
#   - Go >= 1.22 binaries need bcryptprimitives.dll!ProcessPrng, which Wine 8.0
#     lacks (they die with "fatal error: bcryptprimitives.dll not found"), so a
#     forwarder DLL exporting ProcessPrng -> advapi32.SystemFunction036 (both
#     are BOOL f(PVOID buf, ULONG/SIZE_T len) filling buf with random bytes) is
#     linked with mingw binutils and put in the prefix's system32, unless the
#     Wine in use ships its own.
#
# Known Wine 8.0 limits the Windows tests must live with: os.RemoveAll fails
# ("unlinkat ... Invalid function"), so no t.TempDir; no AF_UNIX sockets; see
# the packages' tests for the rest (they t.Skip with the reason).
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 <pkg-dir>..." >&2
	exit 2
fi

log() { printf '[wine.sh %3ds] %s\n' "$SECONDS" "$*"; }

# --- 1. packages -------------------------------------------------------------
pkgs=(wine wine64 binutils-mingw-w64-x86-64)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "$(WINEDEBUG=-all wine --version 2>/dev/null)"

# --- 2. fresh prefix ---------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wine-ci.XXXXXX")
export WINEPREFIX="$tmp/prefix" WINEARCH=win64 WINEDEBUG=-all
# No Mono/Gecko installer prompts, no desktop integration.
export WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d"
cleanup() {
	wineserver -k >/dev/null 2>&1 || true
	wineserver -w >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

log "creating prefix $WINEPREFIX"
if ! wineboot --init >"$tmp/wineboot.log" 2>&1; then
	cat "$tmp/wineboot.log" >&2
	exit 1
fi
wineserver -w
system32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -d "$system32" ]; then
	echo "wineboot did not create $system32" >&2
	cat "$tmp/wineboot.log" >&2
	exit 1
fi

# --- 3. bcryptprimitives.dll forwarder ---------------------------------------
if [ -e "$system32/bcryptprimitives.dll" ]; then
	log "bcryptprimitives.dll is provided by this Wine"
else
	mkdir -p "$tmp/dll"
	cat >"$tmp/dll/bcryptprimitives.def" <<'EOF'
LIBRARY bcryptprimitives.dll
EXPORTS
ProcessPrng = advapi32.SystemFunction036
EOF
	x86_64-w64-mingw32-dlltool --def "$tmp/dll/bcryptprimitives.def" \
		--dllname bcryptprimitives.dll --output-exp "$tmp/dll/bcryptprimitives.exp"
	# No code and no DllMain: an export table with one forwarder, entry point 0.
	x86_64-w64-mingw32-ld -shared -e 0 --no-insert-timestamp \
		-o "$system32/bcryptprimitives.dll" "$tmp/dll/bcryptprimitives.exp"
	log "installed forwarder bcryptprimitives.dll (ProcessPrng -> advapi32.SystemFunction036)"
fi

# --- 4. build and run --------------------------------------------------------
read -r -a extra <<<"${WINE_TEST_FLAGS:-}"
mkdir -p "$tmp/bin"
failed_pkgs=()
npass=0 nfail=0 nskip=0
for pkg in "$@"; do
	case "$pkg" in
	/* | ./* | ../*) ;;
	*) pkg="./$pkg" ;;
	esac
	name=$(printf '%s' "${pkg#./}" | tr -c 'A-Za-z0-9_.-' '_')
	exe="$tmp/bin/$name.test.exe"
	log "building $pkg"
	if ! GOOS=windows GOARCH=amd64 go test -c -o "$exe" "$pkg"; then
		failed_pkgs+=("$pkg (build)")
		continue
	fi
	if [ ! -e "$exe" ]; then
		log "$pkg: no test files"
		continue
	fi
	work="$tmp/work/$name"
	mkdir -p "$work"
	log "running $pkg"
	start=$SECONDS
	set +e
	(cd "$work" && timeout -k 30 420 wine "$exe" -test.v -test.timeout 5m "${extra[@]}") 2>&1 | tee "$tmp/$name.log"
	rc=${PIPESTATUS[0]}
	set -e
	p=$(grep -cE '^ *--- PASS: ' "$tmp/$name.log" || true)
	f=$(grep -cE '^ *--- FAIL: ' "$tmp/$name.log" || true)
	s=$(grep -cE '^ *--- SKIP: ' "$tmp/$name.log" || true)
	npass=$((npass + p)) nfail=$((nfail + f)) nskip=$((nskip + s))
	if [ "$rc" -ne 0 ]; then
		log "FAIL $pkg (exit $rc, $((SECONDS - start))s)"
		failed_pkgs+=("$pkg")
	else
		log "ok   $pkg ($((SECONDS - start))s)"
	fi
done

if [ ${#failed_pkgs[@]} -gt 0 ]; then
	log "failed: ${failed_pkgs[*]}"
	echo "wine: $npass passed, $((nfail > 0 ? nfail : 1)) failed, $nskip skipped"
	exit 1
fi
echo "wine: $npass passed, $nfail failed, $nskip skipped"
