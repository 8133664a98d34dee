#!/usr/bin/env bash
# Every engine measurement in one pass, for a GPU machine (node on PATH, the project built):
#   bash scripts/bench/measure-all.sh [RESULTS_DIR]          (default runs/measure)
# bench-vim for vim-tiny at batch 256 (default, and with the Dawn toggles that turn off index
# clamping and workgroup-memory zeroing) and at batch 128; the scan variants of
# scripts/bench/scan.mjs; the matmul harness. Each run has a time limit; every output lands in
# RESULTS_DIR (text and JSON), and the headline lines are printed. About 4 minutes on an H200.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT="${1:-runs/measure}"
mkdir -p "$OUT" || exit 2
TOGGLES=disable_robustness,disable_workgroup_init

run() { # NAME LIMIT_S COMMAND…
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || echo "   exited with status $rc; see $OUT/$name.txt"
}

run bench-b256 90 node dist/cli/bench-vim.js --model vim-tiny --batch-size 256 --json "$OUT/bench-b256.json"
run bench-b256-toggles 90 env VIM_DAWN_TOGGLES=$TOGGLES node dist/cli/bench-vim.js --model vim-tiny --batch-size 256 --json "$OUT/bench-b256-toggles.json"
run bench-b128 90 node dist/cli/bench-vim.js --model vim-tiny --batch-size 128 --json "$OUT/bench-b128.json"
run scan 120 node scripts/bench/scan.mjs --repeat 20 --rounds 7 --variants default,named,named-KB4,named-KB2,named-walk-alone,default --json "$OUT/scan.json"
run matmul 200 node scripts/bench/matmul.mjs --batch-size 256 --budget 150 --json "$OUT/matmul.json"

echo
for f in bench-b256 bench-b256-toggles bench-b128; do
  echo "$f: $(grep -E '^(training|inference):' "$OUT/$f.txt" 2>/dev/null | tr '\n' ' ')"
done
grep -E '^(default|named)' "$OUT/scan.txt" 2>/dev/null
grep -E 'all matmuls|UNSTEADY' "$OUT/matmul.txt" 2>/dev/null
