#!/usr/bin/env bash
# run-tests.sh BUILD [BUILD...] [-- meson-test-args...]
# Run every test registered with meson in each build directory, then end
# with one summary line over all of them:
#   N passed, N failed, N skipped
# Exit status is non-zero when any test failed (or timed out).
set -uo pipefail
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#builds[@]} -eq 0 ] && builds=(build)
passed=0 failed=0 skipped=0
for b in "${builds[@]}"; do
	log=$(mktemp)
	echo "=== tests in $b"
	meson test -C "$b" --print-errorlogs --num-processes 1 "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	num() { sed -n "s/^$1:[[:space:]]*\([0-9]\+\).*/\1/p" "$log" | tail -n1; }
	ok=$(num Ok); fail=$(num Fail); skip=$(num Skipped); to=$(num Timeout); xf=$(num "Expected Fail"); up=$(num "Unexpected Pass")
	ok=${ok:-0}; fail=${fail:-0}; skip=${skip:-0}; to=${to:-0}; xf=${xf:-0}; up=${up:-0}
	f=$((fail + to + up))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	passed=$((passed + ok + xf)); failed=$((failed + f)); skipped=$((skipped + skip))
	rm -f "$log"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
