#!/usr/bin/env python3
"""
match_logits.py: the PyTorch peer's logits against our WebGPU engine's, on the same checkpoint and
the same CIFAR-10 test images.

  node scripts/peer/our_logits.mjs --checkpoint FILE --count 64 --out our-logits.json
  python3 scripts/peer/match_logits.py --checkpoint FILE --logits our-logits.json

Loads the checkpoint into vim_peer.VimPeer (safetensors parsed here; F32, F16 and BF16 tensors),
reads the images named by the JSON's indices straight from test_batch.bin, and computes the logits
in float32 with the sequential scan and with the parallel scan (and in float64 with the sequential
scan, for information). Prints the max abs difference of each against ours and whether the top-1
predictions agree. Exit status: 0 when both float32 differences are within --tolerance (default
1e-4), 1 when not, 2 for a usage or file problem.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vim_peer import PeerError, load_checkpoint, read_cifar10_test  # noqa: E402


def read_ours(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise PeerError(f'{path}: no such file; write it with scripts/peer/our_logits.mjs') from None
    except (OSError, ValueError) as e:
        raise PeerError(f'{path}: not a readable JSON file ({e}); write it again with scripts/peer/our_logits.mjs') from None
    if not isinstance(data, dict) or not isinstance(data.get('logits'), list) or not isinstance(data.get('indices'), list):
        raise PeerError(f'{path}: expected the JSON of our_logits.mjs with "indices" and "logits"')
    if len(data['logits']) != len(data['indices']) or not data['indices']:
        raise PeerError(f'{path}: "indices" and "logits" must be non-empty and of the same length')
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--checkpoint', required=True, help='the checkpoint our_logits.mjs ran (.safetensors)')
    ap.add_argument('--logits', required=True, help="the JSON written by our_logits.mjs")
    ap.add_argument('--data-dir', help='where CIFAR-10 is (default: $VIM_DATA_DIR, else datasets/)')
    ap.add_argument('--model', help="the config name or file, for a checkpoint whose metadata holds none")
    ap.add_argument('--tolerance', type=float, default=1e-4, help='max abs difference allowed (default 1e-4)')
    ap.add_argument('--device', default='cpu', help='torch device (default cpu; on CUDA TF32 is turned off)')
    ap.add_argument('--batch-size', type=int, default=64, help='images per forward pass (default 64)')
    args = ap.parse_args()

    try:
        ours = read_ours(args.logits)
        model, info = load_checkpoint(args.checkpoint, args.model)
        cfg = info['config']
        ck = ours.get('checkpoint')
        if ck and Path(ck).resolve() != Path(args.checkpoint).resolve():
            print(f'note: {args.logits} was computed from {ck}, not {args.checkpoint}')
        images, labels = read_cifar10_test(ours['indices'], args.data_dir)
        theirs = torch.tensor(ours['logits'], dtype=torch.float64)
        if theirs.shape != (len(ours['indices']), cfg.num_classes):
            raise PeerError(f'{args.logits}: logits have shape {list(theirs.shape)}, expected '
                            f'[{len(ours["indices"])}, {cfg.num_classes}] for {cfg.name}')
        dev = torch.device(args.device)
        if dev.type == 'cuda':
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
    except PeerError as e:
        print(f'match_logits: error: {e}', file=sys.stderr)
        return 2

    print(f'checkpoint: {args.checkpoint}: {cfg.describe()}; stored as {", ".join(info["dtypes"])}'
          + (f'; ignored {len(info["skipped"])} training-state tensors' if info['skipped'] else ''))
    print(f'ours: {args.logits} ({ours.get("engine", "?")} on {ours.get("adapter", "?")}), '
          f'{len(ours["indices"])} test images from index {ours["indices"][0]}')
    print(f'peer: torch {torch.__version__} on {dev}')
    model.eval().to(dev)

    def logits(dtype, scan):
        m = model.to(dtype)
        outs = []
        with torch.inference_mode():
            for s in range(0, images.shape[0], args.batch_size):
                outs.append(m(images[s:s + args.batch_size].to(dev), scan=scan).double().cpu())
        return torch.cat(outs)

    ours_top1 = theirs.argmax(1)
    ok = True
    rows = [('float32', torch.float32, 'sequential', True), ('float32', torch.float32, 'parallel', True),
            ('float64', torch.float64, 'sequential', False)]
    results = {}
    for name, dtype, scan, gate in rows:
        lg = logits(dtype, scan)
        results[(name, scan)] = lg
        diff = (lg - theirs).abs()
        agree = int((lg.argmax(1) == ours_top1).sum())
        passed = diff.max().item() <= args.tolerance
        if gate:
            ok &= passed
        verdict = ('pass' if passed else 'FAIL') if gate else 'info'
        print(f'{name} {scan:>10}: max |peer − ours| = {diff.max().item():.3e} (mean {diff.mean().item():.2e}), '
              f'top-1 agrees on {agree}/{len(lg)}  [{verdict}]')
    ref = results[('float64', 'sequential')]
    for scan in ('sequential', 'parallel'):
        print(f'float32 {scan:>10} vs float64 peer: max abs {(results[("float32", scan)] - ref).abs().max().item():.3e}')
    print(f'ours (f32 WebGPU) vs float64 peer: max abs {(theirs - ref).abs().max().item():.3e}; '
          f'logits range [{ref.min().item():.3f}, {ref.max().item():.3f}]')
    acc = int((ref.argmax(1) == labels).sum())
    print(f'top-1 vs the true labels: peer {acc}/{len(labels)}, ours {int((ours_top1 == labels).sum())}/{len(labels)}')
    print('MATCH' if ok else 'MISMATCH', f'(tolerance {args.tolerance:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
