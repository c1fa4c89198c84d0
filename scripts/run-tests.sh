#!/usr/bin/env bash
# Run every test registered with meson and end with one summary line:
#   N passed, N failed, N skipped
# Exit status is non-zero when any test failed (or timed out).
set -uo pipefail
BUILD=${1:-build}
log=$(mktemp)
meson test -C "$BUILD" --print-errorlogs --num-processes 1 "${@:2}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
num() { sed -n "s/^$1:[[:space:]]*\([0-9]\+\).*/\1/p" "$log" | tail -n1; }
ok=$(num Ok); fail=$(num Fail); skip=$(num Skipped); to=$(num Timeout); xf=$(num "Expected Fail"); up=$(num "Unexpected Pass")
ok=${ok:-0}; fail=${fail:-0}; skip=${skip:-0}; to=${to:-0}; xf=${xf:-0}; up=${up:-0}
failed=$((fail + to + up))
passed=$((ok + xf))
rm -f "$log"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed, $skip skipped"
[ "$failed" -eq 0 ]
