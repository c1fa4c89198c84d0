#!/usr/bin/env bash
# run-fuzzer.sh HARNESS SEEDS SCRATCH [extra libFuzzer args]
# Fuzz one harness for KMIG_FUZZ_SECONDS (default 20) from its seed corpus.
# New inputs go to SCRATCH (in the build tree), never into the seeds.  A
# crash, leak or failed check leaves its input in SCRATCH/../artifacts and
# fails; the last lines say how many runs and how much coverage.
set -uo pipefail
harness=$1 seeds=$2 scratch=$3
shift 3
secs=${KMIG_FUZZ_SECONDS:-20}
artifacts=$(dirname "$scratch")/artifacts
mkdir -p "$scratch" "$artifacts"
log=$(mktemp)
"$harness" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
	-artifact_prefix="$artifacts/$(basename "$harness")-" "$@" "$scratch" "$seeds" >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
	tail -n 60 "$log"
	echo "run-fuzzer: $(basename "$harness") failed (exit $rc); inputs in $artifacts"
else
	grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tail -n 3
	grep -E 'cov: [0-9]+' "$log" | tail -n 1
fi
rm -f "$log"
exit $rc
