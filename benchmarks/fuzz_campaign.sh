#!/usr/bin/env bash
# A long fuzz campaign of decoding.generate (tests/test_fuzz.py), split into seeds, at low priority.
#
#   benchmarks/fuzz_campaign.sh [TOTAL_EXAMPLES] [PER_SEED] [FIRST_SEED]     (defaults: 20000 1000 1)
#
# Each seed runs tests/test_fuzz.py with DECODING_FUZZ_SEED=<seed> and DECODING_FUZZ_EXAMPLES=<per seed>
# under `nice -n 19` with OMP_NUM_THREADS=1. Hypothesis stops a seed at its first failure (after
# shrinking it), so a seed's count is what Hypothesis reports it ran. One line per seed goes to
# $LOG (default fuzz_campaign.log): seed, examples run, pass/FAIL; each failing seed's falsifying
# example and error follow it. The last line sums up: examples run, seeds, failing seeds.
#
# With REFRESH_FROM=<a git checkout>, the script's own folder is a copy that is refreshed from that
# checkout's HEAD before each seed (git archive), so a campaign run from a copy tests the latest
# commit while work goes on in the checkout:
#   git archive HEAD | tar -x -C /tmp/fuzz && REFRESH_FROM=$PWD /tmp/fuzz/benchmarks/fuzz_campaign.sh
set -u
TOTAL=${1:-20000}
PER_SEED=${2:-1000}
FIRST=${3:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
LOG=${LOG:-fuzz_campaign.log}
export OMP_NUM_THREADS=1

cd "$ROOT" || exit 1
seeds=$(( (TOTAL + PER_SEED - 1) / PER_SEED ))
ran=0
failed=0
echo "campaign: $TOTAL examples as $seeds seeds of $PER_SEED, from seed $FIRST, $(date -u +%FT%TZ)" >> "$LOG"
for ((i = 0; i < seeds; i++)); do
    seed=$((FIRST + i))
    out=$(mktemp)
    if [ -n "${REFRESH_FROM:-}" ]; then
        git -C "$REFRESH_FROM" archive HEAD | tar -x -C "$ROOT"
    fi
    DECODING_FUZZ_SEED=$seed DECODING_FUZZ_EXAMPLES=$PER_SEED nice -n 19 "$PYTHON" -m pytest tests/test_fuzz.py -q \
        -p no:cacheprovider --hypothesis-show-statistics > "$out" 2>&1
    status=$?
    # "- N passing examples, M failing examples, K invalid examples" (one line per test)
    count=$(grep -oE '[0-9]+ passing examples, [0-9]+ failing' "$out" | awk '{s += $1 + $4} END {print s + 0}')
    ran=$((ran + count))
    if [ "$status" -eq 0 ]; then
        echo "seed $seed: $count examples, pass" >> "$LOG"
    else
        failed=$((failed + 1))
        echo "seed $seed: $count examples, FAIL" >> "$LOG"
        grep -A14 'Falsifying example' "$out" | sed 's/^/    /' >> "$LOG"
        grep -E '^E  |    \| E  ' "$out" | head -8 | sed 's/^/    /' >> "$LOG"
    fi
    rm -f "$out"
done
echo "total: $ran examples run, $seeds seeds, $failed failing seeds, $(date -u +%FT%TZ)" >> "$LOG"
