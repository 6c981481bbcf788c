#!/usr/bin/env bash
# bench/baseline.sh REV [bench flags...]
#
# Runs the peer comparison with the library at git revision REV (the
# baseline) as extra subjects, interleaved in the same run as the current
# library (this checkout's working tree) and the peers. See README.md,
# "Comparing against a baseline revision".
#
# How: the root module at REV is exported with git archive into a temp dir
# and renamed to <module>-baseline; the bench module of this checkout is
# copied into a temp dir and gets lib_baseline.go, generated from REV's own
# bench/lib.go (REV's API) by internal/baselinegen with names, IDs
# (base-json, base-binary) and child roles that do not collide with the
# current lib.go; then `go run . [bench flags...]` runs there. Nothing is
# written into the checkout. Progress and notes go to stderr, the report to
# stdout. BENCH_BASELINE_KEEP=1 keeps the temp dir (its path is printed).
set -euo pipefail

die() { echo "baseline.sh: $*" >&2; exit 2; }
note() { echo "baseline.sh: $*" >&2; }

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
	cat >&2 <<-'EOF'
	usage: bench/baseline.sh REV [bench flags...]

	Measures the library at git revision REV (subjects base-json, base-binary,
	named "worker (...) @REV") in the same interleaved run as the current
	working tree's library (worker-json, worker-binary) and the peers.
	Bench flags as for `go run .` in bench/, e.g.
	  bench/baseline.sh HEAD~5 -subjects raw,worker-json,base-json -rounds 3
	EOF
	[ $# -lt 1 ] && exit 2
	exit 0
fi
rev_arg=$1
shift

command -v go >/dev/null || die "go is not on PATH"
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(git -C "$bench" rev-parse --show-toplevel) || die "$bench is not in a git checkout"
root=$(cd "$root" && pwd -P)
rev=$(git -C "$root" rev-parse --verify --quiet "$rev_arg^{commit}") || die "unknown revision $rev_arg"
short=$(git -C "$root" rev-parse --short "$rev")
git -C "$root" cat-file -e "$rev:go.mod" 2>/dev/null || die "$short has no go.mod at the root"
git -C "$root" cat-file -e "$rev:bench/lib.go" 2>/dev/null || die "$short has no bench/lib.go (the library's bench subjects)"

modpath() { awk '$1 == "module" { gsub(/"/, "", $2); print $2; exit }'; }
cur_mod=$(modpath <"$root/go.mod")
rev_mod=$(git -C "$root" show "$rev:go.mod" | modpath)
if [ -z "$cur_mod" ] || [ -z "$rev_mod" ]; then die "cannot read the module paths"; fi
base_mod="$rev_mod-baseline"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-baseline.XXXXXX")
if [ -n "${BENCH_BASELINE_KEEP:-}" ]; then
	trap 'note "kept $tmp"' EXIT
else
	trap 'rm -rf "$tmp"' EXIT
fi
trap 'exit 130' INT
trap 'exit 143' TERM

export GOWORK=off # the temp bench module is its own main module

# 1. The library at REV as module $base_mod (its bench/ is not part of it).
mkdir "$tmp/base"
git -C "$root" archive --format=tar "$rev" | tar -x -C "$tmp/base"
rm -rf "$tmp/base/bench"
git -C "$root" show "$rev:bench/lib.go" >"$tmp/lib_rev.go"
(cd "$tmp/base" && go mod edit -module "$base_mod")

# 2. A copy of the current bench module, with lib_baseline.go from REV's lib.go.
mkdir "$tmp/bench"
(cd "$bench" && tar -cf - --exclude=./poolbench/node_modules --exclude=./bench.out --exclude='*.test' --exclude='*.prof' .) | tar -x -C "$tmp/bench"
rm -f "$tmp/bench/lib_baseline.go"
cd "$tmp/bench"
# 3. Wire the modules: the current library is this checkout (absolute path),
# the baseline is the temp dir. The baseline needs the modules REV's go.mod
# requires, so REV's go.sum (and the current root's) is merged into the
# bench's: no checksum lookup is needed for them.
go mod edit \
	-replace="$cur_mod=$root" \
	-require="$base_mod@v0.0.0-00010101000000-000000000000" \
	-replace="$base_mod=$tmp/base"
{
	cat go.sum
	for f in "$root/go.sum" "$tmp/base/go.sum"; do
		if [ -f "$f" ]; then cat "$f"; fi
	done
} | sort -u >go.sum.new
mv go.sum.new go.sum

go run ./internal/baselinegen module -old "$rev_mod" -new "$base_mod" "$tmp/base"
go run ./internal/baselinegen lib -old "$rev_mod" -new "$base_mod" -rev "$short" \
	-bench . -in "$tmp/lib_rev.go" -out lib_baseline.go

cur_desc="working tree of $(git -C "$root" rev-parse --short HEAD)"
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . 2>/dev/null)" ]; then
	cur_desc="$cur_desc with uncommitted changes"
fi
rev_subject=$(git -C "$root" log -1 --format='%cs %<(64,trunc)%s' "$rev" | sed 's/ *$//')
base_ids=$(sed -n 's/.*ID: *"\([^"]*\)".*/\1/p' lib_baseline.go | paste -sd, -)
note "baseline: $short ($rev_subject) as $base_ids"
note "current:  $cur_desc"
note "building in $tmp/bench"
# The one line of context in the report itself.
echo "Baseline: rows \`… @$short\` ($base_ids) = the library at $rev ($rev_subject); the other worker rows = $cur_desc."
echo

# 4. Run (-mod=mod: the baseline's requirements are added to the temp go.mod
# if REV needs anything beyond what the bench already requires).
go run -mod=mod . "$@"
