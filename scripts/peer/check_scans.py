#!/usr/bin/env python3
"""
check_scans.py: the 'sequential' and 'parallel' selective scans of vim_peer.py agree, forward and
gradients (autograd), and each one's float32 result against float64.

  python3 scripts/peer/check_scans.py [--device cpu|cuda] [--tolerance 1e-9] [--f32-tolerance 1e-5]

Cases: short and long sequences (L = 65, 257, 1024, 2048), Δ from small to very large (so that
Δ·A reaches −800 per token), odd sizes. Prints one row per case: relative errors ‖x − ref‖/‖ref‖ of y
and of the worst gradient (over u, Δ, A, B, C, D): parallel against sequential in float64; each
scan in float32 against the float64 sequential scan; parallel against sequential in float32. Then
a vim-nano model check: forward logits and every parameter gradient of the whole model with each
scan, in float64. Exits 1 if an agreement is worse than its tolerance or anything is not finite.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vim_peer import build_vim, load_config, scan_parallel, scan_sequential  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def inputs(G, B, L, E, N, dscale, gen, device):
    """u, Δ, A, B, C, D in float64; Δ = dscale·softplus(2·N(0,1)), A = −(1…N)·e^{0.1·N(0,1)}."""
    kw = dict(dtype=torch.float64, device='cpu', generator=gen)
    u = torch.randn(G, B, L, E, **kw)
    delta = F.softplus(2 * torch.randn(G, B, L, E, **kw)) * dscale
    A = -torch.arange(1, N + 1, dtype=torch.float64).repeat(G, E, 1) * torch.exp(0.1 * torch.randn(G, E, N, **kw))
    Bm = torch.randn(G, B, L, N, **kw)
    Cm = torch.randn(G, B, L, N, **kw)
    D = torch.randn(G, E, **kw)
    return [t.to(device) for t in (u, delta, A, Bm, Cm, D)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--tolerance', type=float, default=1e-9, help='float64 agreement of the two scans (default 1e-9)')
    ap.add_argument('--f32-tolerance', type=float, default=1e-5, help='float32 agreement of the two scans (default 1e-5)')
    args = ap.parse_args()
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(7)
    ok = True
    print(f'torch {torch.__version__} on {dev}; Δ·A is the per-token log-decay (its minimum shown)')
    print(f'{"":>37} | par vs seq, f64  | f32 vs the f64 sequential scan      | f32 par vs seq')
    print(f'{"G,B,L,E,N":>18} {"Δ scale":>8} {"min Δ·A":>9} | {"y":>8} {"grads":>8} | '
          f'{"seq y":>8} {"par y":>8} {"seq grad":>8} {"par grad":>8} | {"y, grads":>8}')
    cases = [
        ((2, 3, 65, 7, 16), 0.05), ((2, 3, 65, 7, 16), 1.0), ((2, 3, 65, 7, 16), 10.0),
        ((2, 2, 257, 5, 16), 0.05), ((2, 2, 257, 5, 16), 1.0), ((2, 2, 257, 5, 16), 30.0),
        ((1, 2, 1024, 3, 8), 0.02), ((1, 2, 1024, 3, 8), 3.0), ((1, 1, 2048, 2, 4), 0.01),
    ]
    for shape, dscale in cases:
        xs = inputs(*shape, dscale, gen, dev)
        min_la = (xs[1].unsqueeze(-1) * xs[2][:, None, None]).min().item()
        leaves = [x.clone().requires_grad_(True) for x in xs]
        y_seq = scan_sequential(*leaves)
        y_par = scan_parallel(*leaves)
        gout = torch.randn(y_seq.shape, dtype=torch.float64, generator=gen).to(dev)
        g_seq = torch.autograd.grad(y_seq, leaves, gout)
        g_par = torch.autograd.grad(y_par, leaves, gout)
        ey = rel(y_par, y_seq)
        eg = max(rel(a, b) for a, b in zip(g_par, g_seq))
        x32 = [x.float().requires_grad_(True) for x in xs]
        y32s, y32p = scan_sequential(*x32), scan_parallel(*x32)
        g32s = torch.autograd.grad(y32s, x32, gout.float())
        g32p = torch.autograd.grad(y32p, x32, gout.float())
        e32s, e32p = rel(y32s, y_seq), rel(y32p, y_seq)
        e32gs = max(rel(a, b) for a, b in zip(g32s, g_seq))
        e32gp = max(rel(a, b) for a, b in zip(g32p, g_seq))
        e32sp = max([rel(y32p, y32s)] + [rel(a, b) for a, b in zip(g32p, g32s)])
        finite = all(torch.isfinite(t).all().item() for t in [y_seq, y_par, *g_seq, *g_par, y32s, y32p, *g32s, *g32p])
        bad = not finite or ey > args.tolerance or eg > args.tolerance or e32sp > args.f32_tolerance
        ok &= not bad
        print(f'{",".join(map(str, shape)):>18} {dscale:>8g} {min_la:>9.1f} | {ey:>8.1e} {eg:>8.1e} | '
              f'{e32s:>8.1e} {e32p:>8.1e} {e32gs:>8.1e} {e32gp:>8.1e} | {e32sp:>8.1e}{"  FAIL" if bad else ""}')

    # The whole model: vim-nano, random init with the backward Δ bias at 0 (larger Δ), float64.
    cfg = load_config('vim-nano')
    torch.manual_seed(0)
    model = build_vim(cfg, seed=3, backward_dt_bias='zero').double().to(dev)
    images = torch.randint(0, 256, (3, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, generator=gen).to(dev)
    labels = torch.tensor([1, 4, 9], device=dev)
    out = {}
    for scan in ('sequential', 'parallel'):
        model.zero_grad(set_to_none=True)
        logits = model(images, scan=scan)
        F.cross_entropy(logits, labels, label_smoothing=0.1).backward()
        out[scan] = (logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()})
    el = rel(out['parallel'][0], out['sequential'][0])
    worst = max(((rel(out['parallel'][1][n], g), n) for n, g in out['sequential'][1].items()))
    bad = el > args.tolerance or worst[0] > args.tolerance
    ok &= not bad
    print(f'vim-nano model, float64: logits {el:.1e}, worst parameter gradient {worst[0]:.1e} ({worst[1]})'
          f'{"  FAIL" if bad else ""}')
    print('all agree' if ok else 'DISAGREEMENT', f'(tolerance {args.tolerance:g} in float64, {args.f32_tolerance:g} in float32)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
