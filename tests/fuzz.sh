#!/usr/bin/env bash
# make fuzz: run every fuzz target in the module for FUZZTIME each (the first
# argument, a Go duration; default 1m). Targets are found by their
# declaration (func FuzzX(f *testing.F)) in *_test.go files, so a new target
# is picked up without editing this script. A failing input is written by
# go test to the package's testdata/fuzz/ and fails the run; every target
# still runs. At the end a table lists each target, its executions and its
# result.
set -uo pipefail

cd "$(dirname "$0")/.."

readonly FUZZTIME=${1:-1m}
readonly GO=${GO:-go}
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# targets prints "PACKAGE_DIR TARGET" for every fuzz target.
targets() {
	git ls-files '*_test.go' | while read -r file; do
		sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F) {$/\1/p' "$file" |
			while read -r name; do
				printf './%s %s\n' "$(dirname "$file")" "$name"
			done
	done | sort -u
}

failed=0
results=()
while read -r pkg name; do
	log="$logdir/$name.log"
	printf 'fuzz: %s %s for %s\n' "$pkg" "$name" "$FUZZTIME" >&2
	if $GO test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" >"$log" 2>&1; then
		status=ok
	else
		status=FAILED
		failed=1
		tail -n 30 "$log" >&2
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	results+=("$(printf '%-22s %-18s %12s  %s' "$name" "$pkg" "${execs:-0}" "$status")")
done < <(targets)

printf '\n%-22s %-18s %12s  %s\n' TARGET PACKAGE EXECS RESULT
printf '%s\n' "${results[@]}"
exit "$failed"
