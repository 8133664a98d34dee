#!/usr/bin/env python3
"""
check_step.py: one training step of the peer against our float64 reference, both in float64.

  python3 scripts/peer/check_step.py [--checkpoint FILE] [--images 2] [--lr 1e-3]

The step: logits of the first n test images, softmax cross-entropy with label smoothing 0.1,
gradients, clipping to global norm 1, one AdamW step (betas 0.9/0.999, eps 1e-8, weight decay 0.05
on our decay mask). Ours is src/reference/ (vimLoss, smooth_targets, adamw_update, decay_mask; run
through node from dist/, so the project must be built); the peer's is vim_peer.VimPeer.double() with
autograd, clip_grad_norm_ and torch.optim.AdamW, once with each scan. Without --checkpoint it makes
a vim-nano with perturbed weights (backward Δ bias 0, larger A, Δ, D, head ×100) so that the
gradients are large and the clipping acts. Prints the loss, the gradient norm, the worst relative
gradient error and the largest parameter difference after the step; exit status 1 above 1e-9.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vim_peer import (REPO_ROOT, PeerError, build_vim, load_checkpoint, load_config, param_groups,  # noqa: E402
                      read_cifar10_test, save_checkpoint)

NODE_REFERENCE = r"""
import { loadCheckpoint } from '%(dist)s/model/checkpoint.js';
import { loadCifar10Split } from '%(dist)s/data/cifar10.js';
import { vimLoss, smooth_targets, adamw_update, decay_mask } from '%(dist)s/reference/index.js';
import { writeFileSync } from 'node:fs';
const [ck, out, nImages, lr, dataDir] = process.argv.slice(1);
const { cfg, params } = loadCheckpoint(ck);
const p = params.toFloat64();
const test = loadCifar10Split(dataDir || undefined, 'test', { verify: false });
const B = Number(nImages), per = 3 * cfg.imgSize * cfg.imgSize;
const targets = new Float64Array(B * cfg.C);
smooth_targets(targets, test.labels.subarray(0, B), B, cfg.C, 0.1);
const { loss, grads } = vimLoss(p, test.images.subarray(0, B * per), targets, B);
let ss = 0;
for (const g of grads.flat) ss += g * g;
const norm = Math.sqrt(ss);
const scale = norm > 1 ? 1 / (norm + 1e-6) : 1;  // clip to norm 1, as the GPU's grad_clip_scale
const g = grads.flat.map((v) => v * scale);
const m = new Float64Array(g.length), v = new Float64Array(g.length), np = Float64Array.from(p.flat);
adamw_update(np, g, m, v, decay_mask(p.specs), Number(lr), 0.9, 0.999, 1e-8, 0.05, 1);
const res = { loss, norm, params: {}, grads: {} };
for (const s of p.specs) {
  res.params[s.name] = Array.from(np.subarray(s.offset, s.offset + s.size));
  res.grads[s.name] = Array.from(grads.flat.subarray(s.offset, s.offset + s.size));
}
writeFileSync(out, JSON.stringify(res));
"""


def perturbed_nano(path: str) -> None:
    model = build_vim(load_config('vim-nano'), seed=11, backward_dt_bias='zero')
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if n.endswith(('A_log', 'A_b_log')):
                p.add_(0.5 * r)
            elif n.endswith(('.D', '.D_b')):
                p.copy_(r)
            elif n.endswith('norm.weight') or n == 'norm_f.weight':
                p.mul_(1 + 0.3 * r)
            elif n.endswith(('dt_proj.bias', 'dt_proj_b.bias')):
                p.add_(2 * r)
            elif n == 'head.weight':
                p.mul_(100)
            else:
                p.add_(0.3 * p.std() * r)
    save_checkpoint(model, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--checkpoint', help='one of our checkpoints (default: a perturbed vim-nano made here)')
    ap.add_argument('--images', type=int, default=2, help='test images in the batch (default 2)')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--data-dir', help='where CIFAR-10 is (default: $VIM_DATA_DIR, else datasets/)')
    ap.add_argument('--tolerance', type=float, default=1e-9)
    args = ap.parse_args()
    dist = REPO_ROOT / 'dist'
    if not (dist / 'reference' / 'index.js').is_file():
        print(f'check_step: error: {dist} has no build; run npm run build', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        ck = args.checkpoint or str(Path(tmp) / 'perturbed.safetensors')
        if not args.checkpoint:
            perturbed_nano(ck)
        ref_path = Path(tmp) / 'ref.json'
        script = NODE_REFERENCE % {'dist': dist.as_uri()}
        r = subprocess.run(['node', '--input-type=module', '-e', script, ck, str(ref_path), str(args.images),
                            str(args.lr), args.data_dir or ''], capture_output=True, text=True)
        if r.returncode != 0:
            print(f'check_step: error: the reference step failed: {r.stderr.strip()[-2000:]}', file=sys.stderr)
            return 2
        ref = json.loads(ref_path.read_text())
        ok = True
        try:
            images, labels = read_cifar10_test(range(args.images), args.data_dir)
            for scan in ('sequential', 'parallel'):
                model, _ = load_checkpoint(ck, scan=scan)
                model = model.double()
                opt = torch.optim.AdamW(param_groups(model, 0.05), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
                loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
                loss.backward()
                gerr = max(((p.grad - torch.tensor(ref['grads'][n], dtype=torch.float64).view_as(p)).norm()
                            / torch.tensor(ref['grads'][n], dtype=torch.float64).norm().clamp_min(1e-300)).item()
                           for n, p in model.named_parameters())
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
                opt.step()
                perr = max((p.detach() - torch.tensor(ref['params'][n], dtype=torch.float64).view_as(p)).abs().max().item()
                           for n, p in model.named_parameters())
                bad = max(gerr, perr, abs(loss.item() - ref['loss']) / abs(ref['loss'])) > args.tolerance
                ok &= not bad
                print(f'{scan:>10}: loss {loss.item():.12f} (ours {ref["loss"]:.12f}), gradient norm {norm:.9f} '
                      f'(ours {ref["norm"]:.9f}), worst gradient rel. error {gerr:.1e}, '
                      f'max |parameter after the step − ours| {perr:.1e}{"  FAIL" if bad else ""}')
        except PeerError as e:
            print(f'check_step: error: {e}', file=sys.stderr)
            return 2
    print('the same step' if ok else 'DIFFERENT', f'(tolerance {args.tolerance:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
