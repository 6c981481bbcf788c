#!/usr/bin/env bash
# Short fuzz runs: every Fuzz target of the module's packages (the bench/
# module is separate and not included), each for a short time.
#
#   bash .ci/fuzz.sh                       # every target, FUZZTIME each (default 150000x)
#   FUZZTIME=60s bash .ci/fuzz.sh ./internal/wire
#   source .ci/fuzz.sh; fuzz_all 30s .     # the function alone
#
# Exits (returns) non-zero if a target fails. The failing input is then in
# <package>/testdata/fuzz/<FuzzName>/: after the fix, commit it, and plain
# `go test` keeps it as a regression test.

# fuzz_all FUZZTIME [PACKAGE...]: fuzz each target of the packages (default
# ./...) for FUZZTIME, one after the other; report the failures at the end.
#
# The default budget is a count of executions (about 5-10 s per target on
# 2 cores), not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a target with a bare "context deadline exceeded" when the time runs
# out on a loaded machine (golang/go#75804, fixed in Go 1.27). A count has
# no deadline to race.
fuzz_all() {
	local fuzztime=${1:-150000x}
	shift
	local pkgs=("$@")
	if [ ${#pkgs[@]} -eq 0 ]; then
		pkgs=(./...)
	fi
	local list pkg name failed=() ran=0
	if ! list=$(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' "${pkgs[@]}"); then
		echo "fuzz: go list failed" >&2
		return 1
	fi
	for pkg in $list; do
		local names
		if ! names=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); then
			continue # no fuzz targets (or the listing failed, which go test reports below)
		fi
		for name in $names; do
			echo "--- fuzz $pkg $name for $fuzztime"
			ran=$((ran + 1))
			# A short minimization: a long one would eat the whole budget.
			if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg"; then
				failed+=("$pkg $name")
			fi
		done
	done
	if [ ${#failed[@]} -gt 0 ]; then
		printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
		return 1
	fi
	if [ "$ran" -eq 0 ]; then
		echo "fuzz: no fuzz targets found" >&2
		return 1
	fi
	echo "fuzz: $ran targets passed"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -uo pipefail
	cd "$(dirname "$0")/.."
	fuzz_all "${FUZZTIME:-150000x}" "$@"
fi
