#!/usr/bin/env python3
"""
table.py: the Markdown table of a side-by-side run, from its JSON files.

  python3 scripts/peer/table.py DIR                  the table (stdout)
  python3 scripts/peer/table.py --faster-scan DIR B  'sequential' or 'parallel': the fp32 eager scan
                                                     with more training images/s at batch B

Reads every *.json in DIR: our `bench-vim --json` results (they carry "adapter" and "kernels") and
bench_peer.py's ("implementation": "pytorch"), or the stubs side_by_side.sh writes for a run that
produced none ("error"). Rows: implementation/variant; columns: training images/s one step at a
time, training images/s with the steps back to back (ours: two in flight, as train-vim runs them),
and inference images/s, at each batch size found. Then the ratio ours / best PyTorch fp32 variant (eager or compiled; each
column's best) for training and for inference, and below the table which variant was best, the
devices, and every error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load(dir_: Path):
    ours, peer, bad = {}, {}, []
    for f in sorted(dir_.glob('*.json')):
        try:
            d = json.loads(f.read_text(encoding='utf-8'))
        except (OSError, ValueError) as e:
            bad.append(f'{f.name}: unreadable ({e})')
            continue
        if not isinstance(d, dict) or not isinstance(d.get('batch'), int):
            bad.append(f'{f.name}: not a bench result (no "batch")')
            continue
        if d.get('implementation') == 'pytorch':
            comp = bool(d.get('compile')) and (d.get('compileScope') or 'blocks')
            key = (d.get('precision', '?'), d.get('scan', '?'), comp or False)
            peer.setdefault(key, {})[d['batch']] = (d, f.name)
        elif 'adapter' in d or d.get('implementation') == 'webgpu':
            ours[d['batch']] = (d, f.name)
        else:
            bad.append(f'{f.name}: neither a bench-vim nor a bench_peer result')
    return ours, peer, bad


PHASES = ('train', 'flow', 'infer')
PHASE_HEAD = {'train': 'train img/s', 'flow': 'train back to back', 'infer': 'infer img/s'}


def ips(d, phase):
    """images/s of one phase ('flow': the training steps run back to back), or None."""
    r = d.get('train' if phase == 'flow' else phase) if isinstance(d, dict) else None
    v = r.get('flowImagesPerSecond' if phase == 'flow' else 'imagesPerSecond') if isinstance(r, dict) else None
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def why(d, phase):
    """A short cell for a missing result: OOM, compile error, timeout, error."""
    errs = d.get('errors') or {}
    if phase == 'flow' and ips(d, 'train') is not None:
        return '—'  # a result from before the back-to-back figure existed
    phase = 'train' if phase == 'flow' else phase
    text = str(errs.get(phase) or errs.get('compile') or errs.get('setup') or d.get('error') or '')
    low = text.lower()
    if 'out of memory' in low:
        return 'OOM'
    if 'timed out' in low:
        return 'timeout'
    if 'compile' in errs or 'dynamo' in low or 'inductor' in low or 'triton' in low:
        return 'compile error'
    return 'error' if text else '—'


def fmt(v):
    return f'{v:,.0f}' if v is not None else '—'


def variant_name(key):
    prec, scan, comp = key
    scope = ' (whole model)' if comp == 'model' else ''
    return f'PyTorch {prec}, {scan} scan{", torch.compile" + scope if comp else ""}'


def order(key):
    prec, scan, comp = key
    return (bool(comp), comp == 'model', prec != 'fp32', scan != 'sequential')


def table(dir_: Path) -> str:
    ours, peer, bad = load(dir_)
    batches = sorted(set(ours) | {b for v in peer.values() for b in v})
    if not batches:
        return f'no bench results in {dir_}\n'
    heads = ['implementation / variant'] + [f'{PHASE_HEAD[p]}, B={b}' for p in PHASES for b in batches]
    rows, notes = [], []

    def cells(by_batch):
        out = []
        for phase in PHASES:
            for b in batches:
                if b not in by_batch:
                    out.append('—')
                    continue
                d = by_batch[b][0]
                v = ips(d, phase)
                out.append(fmt(v) if v is not None else why(d, phase))
        return out

    rows.append(['ours: WebGPU f32 (bench-vim)'] + cells(ours))
    for key in sorted(peer, key=order):
        rows.append([variant_name(key)] + cells(peer[key]))

    # ours / best PyTorch fp32, per column
    ratio = ['**ours / best PyTorch fp32**']
    for phase in PHASES:
        for b in batches:
            best = None
            for key, by_batch in peer.items():
                if key[0] != 'fp32' or b not in by_batch:
                    continue
                v = ips(by_batch[b][0], phase)
                if v is not None and (best is None or v > best[0]):
                    best = (v, key)
            o = ips(ours[b][0], phase) if b in ours else None
            if best is not None and o is not None:
                ratio.append(f'**{o / best[0]:.2f}×**')
                notes.append(f'best PyTorch fp32 for {PHASE_HEAD[phase]} at batch {b}: {variant_name(best[1])} ({fmt(best[0])} images/s)')
            else:
                ratio.append('—')
    rows.append(ratio)

    w = [max(len(r[i]) for r in rows + [heads]) for i in range(len(heads))]
    line = lambda r: '| ' + ' | '.join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) + ' |'  # noqa: E731
    out = [line(heads), '| ' + ' | '.join(('-' * w[i]) if i == 0 else ('-' * (w[i] - 1) + ':') for i in range(len(heads))) + ' |']
    out += [line(r) for r in rows]
    out.append('')
    devs = sorted({str(d.get('adapter')) for d, _ in ours.values() if d.get('adapter')})
    if devs:
        out.append(f'ours: {"; ".join(devs)}; model {", ".join(sorted({str(d.get("config")) for d, _ in ours.values()}))}')
    pdevs = sorted({f'{d.get("device")}, torch {d.get("torch")}' for v in peer.values() for d, _ in v.values() if d.get('device')})
    if pdevs:
        out.append(f'PyTorch: {"; ".join(pdevs)}')
    steps = sorted({json.dumps(d.get('step'), sort_keys=True) for v in peer.values() for d, _ in v.values() if d.get('step')})
    for s in steps[:1]:
        st = json.loads(s)
        out.append(f'PyTorch training step: {st.get("loss")}, clip_grad_norm_ {st.get("gradClip")}, '
                   f'{st.get("optimizer") or "AdamW"}, EMA {st.get("ema")}')
    out += [f'- {n}' for n in notes]
    errs = []
    for b, (d, name) in sorted(ours.items()):
        if d.get('error'):
            errs.append(f'{name}: {str(d["error"]).splitlines()[0][:300]}')
    for key in sorted(peer, key=order):
        for b, (d, name) in sorted(peer[key].items()):
            for phase, text in (d.get('errors') or ({'run': d['error']} if d.get('error') else {})).items():
                errs.append(f'{name} ({phase}): {str(text).splitlines()[0][:300]}')
    errs += bad
    if errs:
        out.append('')
        out.append('errors:')
        out += [f'- {e}' for e in errs]
    return '\n'.join(out) + '\n'


def faster_scan(dir_: Path, batch: int) -> str:
    _, peer, _ = load(dir_)
    best = None
    for (prec, scan, comp), by_batch in peer.items():
        if prec == 'fp32' and not comp and batch in by_batch:
            v = ips(by_batch[batch][0], 'train')
            if v is not None and (best is None or v > best[0]):
                best = (v, scan)
    return best[1] if best else 'parallel'


def main(argv) -> int:
    if len(argv) >= 1 and argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0
    if len(argv) == 3 and argv[0] == '--faster-scan':
        try:
            b = int(argv[2])
        except ValueError:
            print(f'table.py: error: batch size must be an integer, not {argv[2]!r}', file=sys.stderr)
            return 2
        print(faster_scan(Path(argv[1]), b))
        return 0
    if len(argv) != 1:
        print('usage: table.py DIR | table.py --faster-scan DIR BATCH', file=sys.stderr)
        return 2
    d = Path(argv[0])
    if not d.is_dir():
        print(f'table.py: error: {d} is not a folder', file=sys.stderr)
        return 2
    sys.stdout.write(table(d))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
