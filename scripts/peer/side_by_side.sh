#!/usr/bin/env bash
# side_by_side.sh: our WebGPU engine and the PyTorch peer, same model and batch sizes, one table.
#
#   bash scripts/peer/side_by_side.sh [RESULTS_DIR]        (default runs/side-by-side)
#
# On a GPU machine with node on PATH, the project built (npm run build) and python3 with torch:
#   1. ours:  node dist/cli/bench-vim.js --model vim-tiny --batch-size B --json RESULTS_DIR/ours-bB.json
#   2. the peer (scripts/peer/bench_peer.py) at the same B: fp32 sequential scan, fp32 parallel scan,
#      tf32-bf16 with the scan that was faster in fp32 training, and fp32 with torch.compile (each
#      block compiled; the parallel scan, or those in COMPILE_SCANS)
#   3. scripts/peer/table.py RESULTS_DIR > RESULTS_DIR/table.md (and printed)
# Every run has a time limit; a run that ends without its JSON gets a stub JSON saying why, and the
# table shows it. Logs: RESULTS_DIR/*.log. Settings (environment): MODEL (vim-tiny), BATCHES
# ("128 256"), PYTHON (python3), COMPILE (1; 0 skips torch.compile), COMPILE_SCANS ("parallel";
# "parallel sequential" for both), OURS_LIMIT_S (150),
# EAGER_LIMIT_S (90), COMPILE_LIMIT_S (150).
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT="${1:-runs/side-by-side}"
PY="${PYTHON:-python3}"
MODEL="${MODEL:-vim-tiny}"
BATCHES="${BATCHES:-128 256}"
COMPILE="${COMPILE:-1}"
COMPILE_SCANS="${COMPILE_SCANS:-parallel}"
OURS_LIMIT_S="${OURS_LIMIT_S:-150}"
EAGER_LIMIT_S="${EAGER_LIMIT_S:-90}"
COMPILE_LIMIT_S="${COMPILE_LIMIT_S:-150}"
export PYTHONUNBUFFERED=1

# A GPU host laid out by ../shared/gpu-host (node installed under /opt/gpuhost) has node after its boot.
if ! command -v node >/dev/null 2>&1; then
  for b in .gpuhost/boot.sh /opt/gpuhost/boot.sh; do
    if [ -f "$b" ]; then . "$b"; break; fi
  done
fi
mkdir -p "$OUT" || exit 2
t_start=$(date +%s)

# stub FILE IMPLEMENTATION BATCH PRECISION SCAN COMPILE MESSAGE: a result that says why there is none
stub() {
  "$PY" - "$@" <<'EOF'
import json, sys
f, impl, b, prec, scan, comp, msg = sys.argv[1:8]
d = {'implementation': impl, 'config': None, 'batch': int(b), 'train': None, 'infer': None, 'error': msg}
if impl == 'pytorch':
    d.update(precision=prec, scan=scan, compile=comp == '1')
json.dump(d, open(f, 'w'), indent=2)
EOF
}

ran_out() {  # the message for a run's exit status
  case "$1" in
    124|137) echo "timed out after $2 s" ;;
    *) echo "exited with status $1 without a result; see $3" ;;
  esac
}

# ---- ours
have_node=1
if ! command -v node >/dev/null 2>&1; then have_node=0; echo "side_by_side: node is not on PATH: skipping our engine" >&2; fi
if [ ! -f dist/cli/bench-vim.js ]; then have_node=0; echo "side_by_side: dist/cli/bench-vim.js is missing (run npm run build): skipping our engine" >&2; fi
for B in $BATCHES; do
  json="$OUT/ours-b$B.json" log="$OUT/ours-b$B.log"
  rm -f "$json"
  if [ "$have_node" = 1 ]; then
    echo "== ours: WebGPU bench-vim, $MODEL, batch $B (at most ${OURS_LIMIT_S} s)"
    timeout -k 10 "$OURS_LIMIT_S" node dist/cli/bench-vim.js --model "$MODEL" --batch-size "$B" --json "$json" > "$log" 2>&1
    rc=$?
    grep -E '^(adapter|training|inference):' "$log"
    [ -s "$json" ] || { stub "$json" webgpu "$B" f32 - 0 "$(ran_out $rc "$OURS_LIMIT_S" "$log")"; tail -n 3 "$log"; }
  else
    stub "$json" webgpu "$B" f32 - 0 "not run: node or the build is missing"
  fi
done

# ---- the peer
# peer NAME LIMIT_S BATCH PRECISION SCAN COMPILE(0|1) [more bench_peer.py options]
peer() {
  local name=$1 limit=$2 b=$3 prec=$4 scan=$5 comp=$6
  shift 6
  local json="$OUT/peer-$name-b$b.json" log="$OUT/peer-$name-b$b.log"
  local cflag=()
  [ "$comp" = 1 ] && cflag=(--compile)
  rm -f "$json"
  echo "== PyTorch: $prec, $scan scan$([ "$comp" = 1 ] && echo ', torch.compile'), batch $b (at most ${limit} s)"
  timeout -k 10 "$limit" "$PY" scripts/peer/bench_peer.py --model "$MODEL" --batch-size "$b" --precision "$prec" \
    --scan "$scan" "${cflag[@]}" --json "$json" "$@" > "$log" 2>&1
  local rc=$?
  grep -E '^(peer|note)' "$log"
  [ -s "$json" ] || { stub "$json" pytorch "$b" "$prec" "$scan" "$comp" "$(ran_out $rc "$limit" "$log")"; tail -n 3 "$log"; }
}

for B in $BATCHES; do
  peer fp32-parallel "$EAGER_LIMIT_S" "$B" fp32 parallel 0
  if [ "$B" -ge 256 ]; then  # the token loop is slow at large batches: fewer steps
    peer fp32-sequential "$EAGER_LIMIT_S" "$B" fp32 sequential 0 --warmup 3 --steps 5
  else
    peer fp32-sequential "$EAGER_LIMIT_S" "$B" fp32 sequential 0 --warmup 3 --steps 10
  fi
done
for B in $BATCHES; do
  scan=$("$PY" scripts/peer/table.py --faster-scan "$OUT" "$B")
  peer "tf32-bf16-$scan" "$EAGER_LIMIT_S" "$B" tf32-bf16 "$scan" 0
done
if [ "$COMPILE" != 0 ]; then
  for B in $BATCHES; do
    for scan in $COMPILE_SCANS; do
      peer "fp32-$scan-compile" "$COMPILE_LIMIT_S" "$B" fp32 "$scan" 1 --warmup 3 --steps 10
    done
  done
fi

# ---- the table
"$PY" scripts/peer/table.py "$OUT" > "$OUT/table.md"
rc=$?
echo
cat "$OUT/table.md"
echo "(${OUT}/table.md; the JSON and logs beside it; $(( $(date +%s) - t_start )) s in all)"
exit $rc
