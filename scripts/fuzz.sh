#!/usr/bin/env bash
# fuzz.sh BUILD-SAN [SECONDS] — fuzz every harness of tests/fuzz for SECONDS
# each (default 60), one after the other, in a -Dfuzz=true build.  New
# inputs collect in BUILD-SAN/tests/fuzz/corpus/NAME (kept between runs);
# a failing input is left in BUILD-SAN/tests/fuzz/artifacts/.
set -uo pipefail
build=${1:-build-san}
secs=${2:-60}
src=$(cd "$(dirname "$0")/.." && pwd)
bad=0
for name in stream channel qmp options; do
	echo "=== fuzz-$name for $secs s"
	KMIG_FUZZ_SECONDS=$secs "$src/tests/fuzz/run-fuzzer.sh" "$build/tests/fuzz/fuzz-$name" \
		"$src/tests/fuzz/corpus/$name" "$build/tests/fuzz/corpus/$name" || bad=1
done
exit $bad
