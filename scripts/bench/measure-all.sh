#!/usr/bin/env bash
# Every engine measurement in one pass, for a GPU machine (node on PATH, the project built):
#   bash scripts/bench/measure-all.sh [RESULTS_DIR [STEP…]]          (default runs/measure, all steps)
# Steps, in this order (name some to run only those; results land in RESULTS_DIR, text and JSON):
#   b256           bench-vim, vim-tiny, batch 256, as shipped (on a GPU: Dawn's index clamping and workgroup-memory zeroing off)
#   b256-robust    the same with Dawn's defaults (VIM_DAWN_TOGGLES=none: robustness on)
#   shapes         bench-vim at batch 256 as shipped, the per-kernel table split by problem shape (--by-shape)
#   scan           the scan variants of scripts/bench/scan.mjs (the default backward against the stream one, the
#                  split kernel's geometries, and its parts skipped one at a time)
#   scan-core      scripts/bench/scan-core.mjs: the scan forward's recurrence as small kernels, one part more each
#   matmul         the matmul harness; its JSON's `tuned` holds the variants that beat the defaults
#   candidates     bench-vim at batch 256 with the candidates inside the whole model: the stream scan
#                  backward (VIM_SCAN_KERNEL=stream) if the scan step found it faster, the harness's
#                  matmul variants (VIM_MATMUL_TUNED); as shipped and with robustness on
#   b128           bench-vim at batch 128 with the candidates
#   check          bench-vim --check with the candidates (every kernel against the float64 reference)
#   sweep          (only when named) bench-vim as shipped at batch 176 … 352: the scan backward's time
#                  against its workgroups per SM (docs/performance.md, measurement 7); one line a batch
#   split          (only when named) bench-vim at batch 256 with the split scan backward
#                  (VIM_SCAN_KERNEL=split), for each lanes-a-channel:segment:workgroup of $SPLIT_GRID
#                  (default "1:2:192 2:1:256 2:2:256 4:1:256 4:2:256 4:3:256 4:4:256"); one line each
#   mmsweep        (only when named) matmul variants inside the whole model: scripts/bench/matmul-sweep.mjs
#                  gen, run and pick in RESULTS_DIR/mmsweep (the candidates of
#                  scripts/bench/matmul-candidates.json at batch 256, shared out over the GPUs nvidia-smi
#                  lists), then bench-vim at batch 256 with the picked table and the base one by turns
#                  (best, base, best), and bench-vim --check with the picked table
# Each run has a time limit; the headline lines are printed at the end. About 3 minutes on an H200.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT="${1:-runs/measure}"
shift || true
STEPS="${*:-b256 b256-robust shapes scan scan-core matmul candidates b128 check}"
mkdir -p "$OUT" || exit 2
BENCH=(node dist/cli/bench-vim.js --model vim-tiny)

run() { # NAME LIMIT_S COMMAND…
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || echo "   exited with status $rc; see $OUT/$name.txt"
  echo "   $((SECONDS - t0)) s"
}

# A bench-vim text's training images/s and the scan backward's ms a step, on one line.
scan_line() {
  echo "$(grep -E '^training: .*images/s' "$1" | tr -s ' ' | cut -d' ' -f2-3) | scan backward: $(grep -E '^selective_scan_backward ' "$1" | head -1 | tr -s ' ' | cut -d' ' -f3) ms"
}

# The candidates' environment: the stream scan backward where the scan step measured it ≥ 3%
# faster than the default (forward + backward with its reductions; the default's last row, since
# the list times it first and last), the matmul harness's entries where it wrote any.
candidates() {
  local env=()
  if [ -f "$OUT/scan.json" ] && node -e '
      const rows = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).rows;
      const us = (n) => { const r = rows.filter((x) => x.name === n).pop(); return r ? r.fwdUs + r.bwdUs : Infinity; };
      process.exit(us("stream") < 0.97 * us("default") ? 0 : 1);' "$OUT/scan.json"; then
    env+=(VIM_SCAN_KERNEL=stream)
  fi
  if [ -f "$OUT/matmul.json" ] && node -e '
      const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).tuned;
      process.exit(t && Object.keys(t).length ? 0 : 1);' "$OUT/matmul.json"; then
    env+=(VIM_MATMUL_TUNED="$OUT/matmul.json")
  fi
  echo "${env[@]}"
}

for step in $STEPS; do
  case $step in
    b256) run bench-b256 90 "${BENCH[@]}" --batch-size 256 --json "$OUT/bench-b256.json" ;;
    b256-robust) run bench-b256-robust 90 env VIM_DAWN_TOGGLES=none "${BENCH[@]}" --batch-size 256 --json "$OUT/bench-b256-robust.json" ;;
    shapes) run bench-b256-shapes 90 "${BENCH[@]}" --batch-size 256 --by-shape --json "$OUT/bench-b256-shapes.json" ;;
    scan) run scan 150 node scripts/bench/scan.mjs --repeat 20 --rounds 7 --variants default,stream,stream-lds,split-S2,split-S3,split-WG128,split-no-lookahead,split-KB1,split-KB8,split-no-reduce,split-no-pass1,split-no-recompute,split-walk-alone,default --json "$OUT/scan.json" ;;
    scan-core) run scan-core 90 node scripts/bench/scan-core.mjs ;;
    matmul) run matmul 200 node scripts/bench/matmul.mjs --batch-size 256 --budget 150 --json "$OUT/matmul.json" ;;
    candidates)
      read -r -a ENV <<< "$(candidates)"
      echo "candidates: ${ENV[*]:-none}" | tee "$OUT/candidates.txt"
      run bench-b256-candidates 90 env "${ENV[@]}" "${BENCH[@]}" --batch-size 256 --json "$OUT/bench-b256-candidates.json"
      run bench-b256-candidates-robust 90 env "${ENV[@]}" VIM_DAWN_TOGGLES=none "${BENCH[@]}" --batch-size 256 --json "$OUT/bench-b256-candidates-robust.json" ;;
    b128)
      read -r -a ENV <<< "$(candidates)"
      run bench-b128-candidates 90 env "${ENV[@]}" "${BENCH[@]}" --batch-size 128 --json "$OUT/bench-b128-candidates.json" ;;
    check)
      read -r -a ENV <<< "$(candidates)"
      run check-candidates 120 env "${ENV[@]}" "${BENCH[@]}" --check ;;
    sweep)
      for b in 176 208 224 240 256 272 288 320 352; do
        run "bench-b$b" 60 "${BENCH[@]}" --batch-size "$b" --json "$OUT/bench-b$b.json"
        echo "   batch $b: $(scan_line "$OUT/bench-b$b.txt")"
      done ;;
    split)
      for g in ${SPLIT_GRID:-1:2:192 2:1:256 2:2:256 4:1:256 4:2:256 4:3:256 4:4:256}; do
        IFS=: read -r p sg wg <<< "$g"
        n="bench-split-p$p-s$sg-w$wg"
        run "$n" 60 env VIM_SCAN_KERNEL=split VIM_SCAN_SPLIT="$p" VIM_SCAN_SEGMENT="$sg" VIM_SCAN_WORKGROUP="$wg" "${BENCH[@]}" --batch-size 256 --json "$OUT/$n.json"
        echo "   lanes $p, segment $sg, workgroup $wg: $(scan_line "$OUT/$n.txt")"
      done ;;
    mmsweep)
      d="$OUT/mmsweep"
      gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
      [ "${gpus:-0}" -ge 1 ] || gpus=1
      run mmsweep-gen 30 node scripts/bench/matmul-sweep.mjs gen "$d"
      # at most 90 s a bench-vim: each GPU's share of the tables and the base once more
      n=$(ls "$d"/cand-*.json 2>/dev/null | wc -l)
      run mmsweep-run $((((n + gpus - 1) / gpus + 1) * 90 + 30)) node scripts/bench/matmul-sweep.mjs run "$d" --batch-size 256 --gpus "$gpus" --time-limit 90
      rm -f "$OUT/mmsweep-best.json"
      run mmsweep-pick 30 node scripts/bench/matmul-sweep.mjs pick "$d" "$OUT/mmsweep-best.json"
      [ -f "$OUT/mmsweep-best.json" ] || continue
      echo "   $(grep -E '^picked' "$OUT/mmsweep-pick.txt")"
      for r in best-a base-b best-c; do
        t="$OUT/mmsweep-best.json"
        [ "${r%-*}" = base ] && t="$d/cand-0.json"
        run "bench-b256-mmsweep-$r" 90 env VIM_MATMUL_TUNED="$t" "${BENCH[@]}" --batch-size 256 --json "$OUT/bench-b256-mmsweep-$r.json"
      done
      run check-mmsweep 120 env VIM_MATMUL_TUNED="$OUT/mmsweep-best.json" "${BENCH[@]}" --check ;;
    *) echo "unknown step $step (known: b256 b256-robust shapes scan matmul candidates b128 check sweep split mmsweep)" >&2; exit 2 ;;
  esac
done

echo
for f in bench-b256 bench-b256-robust bench-b256-candidates bench-b256-candidates-robust bench-b128-candidates \
    bench-b256-mmsweep-best-a bench-b256-mmsweep-base-b bench-b256-mmsweep-best-c; do
  [ -f "$OUT/$f.txt" ] && echo "$f: $(grep -E '^(adapter|training|inference):' "$OUT/$f.txt" 2>/dev/null | tr '\n' ' ')"
done
[ -f "$OUT/candidates.txt" ] && cat "$OUT/candidates.txt"
grep -E '^(default|stream)' "$OUT/scan.txt" 2>/dev/null
grep -E 'all matmuls|UNSTEADY' "$OUT/matmul.txt" 2>/dev/null
grep -E 'passed|failed|FAIL' "$OUT/check-candidates.txt" 2>/dev/null | tail -3
grep -E '^picked' "$OUT/mmsweep-pick.txt" 2>/dev/null
grep -E 'passed|failed|FAIL' "$OUT/check-mmsweep.txt" 2>/dev/null | tail -3
exit 0
