#!/usr/bin/env python3
"""
bench_peer.py: training-step and inference speed of the PyTorch peer (vim_peer.py).

  python3 scripts/peer/bench_peer.py [--model vim-tiny] [--batch-size 128] [--precision fp32|tf32-bf16]
                                     [--scan sequential|parallel] [--compile] [--json FILE]

The timed training step is the one our engine times (src/model/vim-gpu.ts, src/bench/timing.ts):
forward, softmax cross-entropy with label smoothing 0.1, backward, the global gradient norm with
clipping at 1 (clip_grad_norm_), AdamW (torch.optim.AdamW, weight decay 0.05 only where our decay
mask sets it, lr 1e-4, betas 0.9/0.999, eps 1e-8), then an EMA of the weights (decay 0.9995;
--no-ema drops it). Inference is the forward alone under torch.inference_mode. Inputs are random
CIFAR-sized bytes and labels already on the device (data loading is not timed, as in ours); the
model normalises the bytes itself, as ours does.

Each step is timed from an idle GPU (synchronize, then CUDA events around the step, then wait),
after warm-up steps; the median is reported. Then the same number of training steps runs back to
back, with no wait between them, CUDA events around all of them: their mean is `flowMs` (the
figure our `bench-vim` prints as "with two steps in flight", the way `train-vim` runs its steps;
here the host queues each step while the GPU runs the one before, as far as PyTorch lets it).
Without CUDA it runs on the CPU with wall-clock timers and says so (for checking that it runs, at
small sizes).

Precisions: fp32 (TF32 off everywhere: plain f32 matmuls and convolutions), tf32-bf16 (TF32 on and
torch.autocast to bfloat16; the scan, norms, softmax and the residual stream stay f32). --compile
applies torch.compile to each block (vim_peer.compile_blocks: one compilation serves all the blocks;
--compile-scope model compiles the whole model as one graph instead, which takes minutes); when that
fails the error text goes into the JSON.

An out-of-memory or compile error in one phase is recorded in the JSON ("error", and per phase in
"errors") and the other phase still runs. The JSON (--json FILE):
  {config, batch, precision, scan, compile, train: {stepMs, imagesPerSecond, flowMs, flowImagesPerSecond, ...} | null,
   infer: {batchMs, imagesPerSecond, ...} | null, device, torch, error?, errors?, step, ...}
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vim_peer import SCANS, PeerError, build_vim, compile_blocks, load_config, param_count, param_groups  # noqa: E402

PRECISIONS = ('fp32', 'tf32-bf16')


def describe_error(e: BaseException, limit: int = 4000) -> str:
    """One string for the JSON: the exception type and message (long compile errors: head and tail)."""
    text = f'{type(e).__name__}: {e}'.strip()
    if len(text) > limit:
        text = text[: limit // 2] + '\n…\n' + text[-limit // 2:]
    return text


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch.cuda, 'OutOfMemoryError', None)
    return (oom is not None and isinstance(e, oom)) or 'out of memory' in str(e).lower()


def set_precision(precision: str) -> None:
    tf32 = precision == 'tf32-bf16'
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if hasattr(torch, 'set_float32_matmul_precision'):
        torch.set_float32_matmul_precision('high' if tf32 else 'highest')


def autocast_ctx(precision: str, device: torch.device):
    if precision == 'tf32-bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_adamw(model, lr, wd, impl: str, device: torch.device):
    """torch.optim.AdamW over our decay mask; impl auto|fused|foreach|loop. Returns (optimizer, impl used)."""
    groups = param_groups(model, wd)
    kw = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    tries = {'auto': ['fused', 'foreach', 'loop'] if device.type == 'cuda' else ['loop'],
             'fused': ['fused'], 'foreach': ['foreach'], 'loop': ['loop']}[impl]
    last = None
    for t in tries:
        extra = {'fused': {'fused': True}, 'foreach': {'foreach': True}, 'loop': {'foreach': False}}[t]
        try:
            return torch.optim.AdamW(groups, **kw, **extra), t
        except (TypeError, RuntimeError, ValueError) as e:  # fused unknown (torch 1.13) or unsupported here
            last = e
    raise PeerError(f'AdamW ({impl}) is not available in torch {torch.__version__}: {last}')


class Timer:
    """Milliseconds of one call of fn from an idle device: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn) -> float:
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def back_to_back(self, fn, n: int) -> float:
        """Milliseconds a call of n calls of fn run back to back, from an idle device to the end of the last."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / n
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) * 1e3 / n


def run_phase(name: str, fn, timer: Timer, warmup: int, steps: int, batch: int, log) -> dict:
    """warmup calls (the first one timed on its own: it holds any compilation), then steps timed calls."""
    t0 = time.perf_counter()
    first_ms = timer(fn) if warmup > 0 else None
    for i in range(1, warmup):
        fn()
    timer.sync()
    warm_s = time.perf_counter() - t0
    log(f'{name}: {warmup} warm-up ({warm_s:.1f} s, the first {first_ms:.0f} ms)' if first_ms is not None
        else f'{name}: no warm-up')
    ms = [timer(fn) for _ in range(steps)]
    med = statistics.median(ms)
    out = {'imagesPerSecond': batch / med * 1e3, 'warmup': warmup, 'steps': steps,
           'minMs': min(ms), 'maxMs': max(ms), 'firstMs': first_ms, 'warmupSeconds': warm_s, 'allMs': ms}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default='vim-tiny', help='config name in models/ or a .json path (default vim-tiny)')
    ap.add_argument('--batch-size', type=int, default=128, help='images per step (default 128)')
    ap.add_argument('--precision', choices=PRECISIONS, default='fp32')
    ap.add_argument('--scan', choices=SCANS, default='sequential', help='the selective scan (default sequential)')
    ap.add_argument('--compile', action='store_true', help='torch.compile the model')
    ap.add_argument('--compile-mode', default=None, help='torch.compile mode (default: its default)')
    ap.add_argument('--compile-scope', choices=('blocks', 'model'), default='blocks',
                    help='compile each block (one compilation shared by all; default) or the whole model as one graph (slow to compile)')
    ap.add_argument('--warmup', type=int, default=5, help='warm-up training steps (default 5)')
    ap.add_argument('--steps', type=int, default=20, help='timed training steps, the median is reported (default 20)')
    ap.add_argument('--infer-warmup', type=int, help='warm-up forward passes (default: --warmup)')
    ap.add_argument('--infer-steps', type=int, help='timed forward passes (default: --steps)')
    ap.add_argument('--skip-train', action='store_true')
    ap.add_argument('--skip-infer', action='store_true')
    ap.add_argument('--optimizer', choices=('auto', 'fused', 'foreach', 'loop'), default='auto',
                    help='AdamW implementation (auto: fused on CUDA where available, else foreach)')
    ap.add_argument('--lr', type=float, default=1e-4)
    ap.add_argument('--weight-decay', type=float, default=0.05)
    ap.add_argument('--label-smoothing', type=float, default=0.1)
    ap.add_argument('--grad-clip', type=float, default=1.0, help='clip_grad_norm_ max norm (default 1)')
    ap.add_argument('--ema', type=float, default=0.9995, help='EMA decay of the weight copy (default 0.9995)')
    ap.add_argument('--no-ema', action='store_true', help='no EMA update in the step')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--device', default='auto', help='auto (CUDA when there is one), cuda or cpu')
    ap.add_argument('--json', help='also write the results as JSON to this file')
    ap.add_argument('--quiet', action='store_true', help='only the result line')
    args = ap.parse_args()
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))

    for k in ('batch_size', 'steps'):
        if getattr(args, k) < 1:
            ap.error(f'--{k.replace("_", "-")} must be at least 1')
    if args.warmup < 0:
        ap.error('--warmup must be at least 0')
    iw = args.warmup if args.infer_warmup is None else args.infer_warmup
    isteps = args.steps if args.infer_steps is None else args.infer_steps

    note = None
    if args.device == 'auto':
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        if device.type == 'cpu':
            note = 'CUDA is not available: running on the CPU (a check that it runs, not a speed to compare)'
    else:
        device = torch.device(args.device)
        if device.type == 'cuda' and not torch.cuda.is_available():
            print('bench_peer: error: --device cuda but torch.cuda.is_available() is False', file=sys.stderr)
            return 2
    if note:
        print(f'note: {note}', flush=True)
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or platform.machine() or 'cpu')

    result = {
        'config': args.model, 'batch': args.batch_size, 'precision': args.precision, 'scan': args.scan,
        'compile': bool(args.compile), 'compileMode': args.compile_mode,
        'compileScope': args.compile_scope if args.compile else None, 'implementation': 'pytorch',
        'train': None, 'infer': None,
        'device': f'{device.type}: {dev_name}', 'torch': torch.__version__,
        'cuda': torch.version.cuda if device.type == 'cuda' else None,
        'python': platform.python_version(),
        'step': {
            'loss': f'softmax cross-entropy, label smoothing {args.label_smoothing}',
            'gradClip': args.grad_clip, 'optimizer': None, 'lr': args.lr, 'weightDecay': args.weight_decay,
            'ema': None if args.no_ema else args.ema,
        },
    }
    if note:
        result['note'] = note
    errors = {}

    try:
        set_precision(args.precision)
        if device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        cfg = load_config(args.model)
        result['config'] = cfg.name
        torch.manual_seed(args.seed)
        model = build_vim(cfg, scan=args.scan, seed=args.seed).to(device)
        result['parameters'] = param_count(model)
        log(f'{cfg.describe()}: {param_count(model):,} parameters; batch {args.batch_size}, {args.precision}, '
            f'{args.scan} scan, {("torch.compile (" + args.compile_scope + ")") if args.compile else "eager"}, on {result["device"]}, torch {torch.__version__}')
        fwd = model
        if args.compile:
            try:
                if not hasattr(torch, 'compile') or not hasattr(torch.nn.Module, 'compile'):
                    raise RuntimeError(f'torch.compile of modules does not exist in torch {torch.__version__} (it came with 2.0/2.2)')
                kw = {'mode': args.compile_mode} if args.compile_mode else {}
                if args.compile_scope == 'blocks':
                    compile_blocks(model, **kw)
                else:
                    fwd = torch.compile(model, **kw)
            except Exception as e:  # noqa: BLE001 — recorded; nothing to time without it
                errors['compile'] = describe_error(e)
                log(f'torch.compile failed: {errors["compile"].splitlines()[0][:300]}')
                model = None
        gen = torch.Generator(device='cpu').manual_seed(args.seed)
        images = torch.randint(0, 256, (args.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8,
                               generator=gen).to(device)
        labels = torch.randint(0, cfg.num_classes, (args.batch_size,), generator=gen).to(device)
        timer = Timer(device)
        amp = lambda: autocast_ctx(args.precision, device)  # noqa: E731
    except PeerError as e:
        print(f'bench_peer: error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 — e.g. CUDA failing to start: recorded, not a traceback
        errors['setup'] = describe_error(e)
        model = None

    if model is not None and not args.skip_train:
        opt = ema = None
        try:
            opt, impl = make_adamw(model, args.lr, args.weight_decay, args.optimizer, device)
            result['step']['optimizer'] = f'torch.optim.AdamW ({impl})'
            params = [p for p in model.parameters()]
            ema = None if args.no_ema else [p.detach().clone() for p in params]

            def train_step():
                opt.zero_grad(set_to_none=True)
                with amp():
                    logits = fwd(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=args.label_smoothing)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
                opt.step()
                if ema is not None:
                    with torch.no_grad():
                        torch._foreach_mul_(ema, args.ema)
                        torch._foreach_add_(ema, params, alpha=1 - args.ema)

            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            r = run_phase('training', train_step, timer, args.warmup, args.steps, args.batch_size, log)
            r = {'stepMs': statistics.median(r['allMs']), **r}
            flow = timer.back_to_back(train_step, args.steps)
            r.update(flowMs=flow, flowImagesPerSecond=args.batch_size / flow * 1e3)
            if device.type == 'cuda':
                r['peakMemoryGiB'] = torch.cuda.max_memory_allocated(device) / 2**30
            result['train'] = r
        except Exception as e:  # noqa: BLE001 — OOM, compile errors: recorded, then on to inference
            errors['train'] = describe_error(e)
            log(f'training failed: {errors["train"].splitlines()[0][:300]}')
            if not is_oom(e) and not args.quiet:
                traceback.print_exc(limit=3)
        finally:
            opt = ema = None
            model.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == 'cuda':
                torch.cuda.empty_cache()

    if model is not None and not args.skip_infer:
        try:
            model.eval()

            def infer():
                with torch.inference_mode(), amp():
                    return fwd(images)

            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            r = run_phase('inference', infer, timer, iw, isteps, args.batch_size, log)
            r = {'batchMs': statistics.median(r['allMs']), **r}
            if device.type == 'cuda':
                r['peakMemoryGiB'] = torch.cuda.max_memory_allocated(device) / 2**30
            result['infer'] = r
        except Exception as e:  # noqa: BLE001
            errors['infer'] = describe_error(e)
            log(f'inference failed: {errors["infer"].splitlines()[0][:300]}')
            if not is_oom(e) and not args.quiet:
                traceback.print_exc(limit=3)

    if errors:
        result['errors'] = errors
        result['error'] = '; '.join(f'{k}: {v.splitlines()[0][:500]}' for k, v in errors.items())

    t, i = result['train'], result['infer']
    variant = f'{args.precision} {args.scan}{" compiled" if args.compile else ""}'
    parts = [f'peer {result["config"]} batch {args.batch_size} {variant}:']
    parts.append(f'training {t["imagesPerSecond"]:.0f} images/s ({t["stepMs"]:.2f} ms a step, median of {t["steps"]}; '
                 f'{t["flowImagesPerSecond"]:.0f} back to back, {t["flowMs"]:.2f} ms a step)'
                 if t else 'training —')
    parts.append(f'inference {i["imagesPerSecond"]:.0f} images/s ({i["batchMs"]:.2f} ms a batch, median of {i["steps"]})'
                 if i else 'inference —')
    print(' '.join(parts[:1]) + ' ' + '; '.join(parts[1:]) + f'  [{result["device"]}, torch {torch.__version__}]'
          + (f'  error: {result["error"][:300]}' if errors else ''), flush=True)

    if args.json:
        path = Path(args.json)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
            tmp.write_text(json.dumps(result, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
            os.replace(tmp, path)
        except OSError as e:
            print(f'bench_peer: error: cannot write {path} ({e})', file=sys.stderr)
            return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
