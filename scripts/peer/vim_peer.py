"""
The PyTorch peer of vim-webgpu's Vision Mamba (Vim, bimamba v2 with a middle class token).

The same model as src/reference/vim.ts (the float64 specification) and src/model/vim-gpu.ts (the
WebGPU engine), written as an nn.Module whose state dict uses the project's parameter names and
shapes, so a checkpoint written by train-vim loads with load_state_dict. Built from the JSON
configs in models/ (or the config stored in a checkpoint's metadata).

Shape letters, as in the project: B batch, L = Np + 1 tokens, D model width, E = expand·D inner
width, N state size, R Δ rank, K conv width, C classes, P patch size, Np patches, G directions (2).

    x      = (images / 255 − mean_c) / std_c                             (B, 3, H, W)
    tokens = [patches before clsPos ; cls_token ; the rest] + pos_embed   (B, L, D)
    per block:  r = r + h (r = tokens before the first);  hn = RMSNorm(r) · w     (B, L, D)
                xz = hn · in_projᵀ → x | z                                         (B, L, 2E)
                per direction (forward on tokens 0…L−1, backward on the reversed sequence):
                  u = SiLU(causal depthwise conv1d(x)), x_proj(u) → dt_low | B | C
                  Δ = softplus(dt_low · dt_projᵀ + dt_bias),  A = −exp(A_log)
                  h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t u_t ⊗ B_t,  y_t = C_t · h_t + D ⊙ u_t
                h = out_proj(SiLU(z) ⊙ (y_fwd + reverse(y_bwd)) / 2)              (B, L, D)
    r = r + h;  logits = head(RMSNorm(r)[:, clsPos] · norm_f)                       (B, C)

The two directions run together: their per-direction tensors are stacked on a leading axis G = 2
(the backward one in its reversed token order), so each op of the mixer is one call for both.
The selective scan has two implementations, chosen per call or per model:
  'sequential': a Python loop over the L tokens on (G, B, E, N) states, as the plain-PyTorch
                reference of Mamba (selective_scan_ref) does;
  'parallel':   a chunked scan in log space (see scan_parallel).
Both are plain PyTorch ops, so autograd gives the backward.

compile_blocks(model) applies torch.compile to each block (RMSNorm + mixer, scan included): the
blocks have the same code and shapes, so they can share one compiled graph, where compiling the
whole model traces every block into one graph and takes minutes.

Works with torch 1.13 (CPU) and 2.x (CUDA). Only torch, numpy and the standard library.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / 'models'

#: Per-channel mean and std of the CIFAR-10 training set on the 0…1 scale (src/model/config.ts).
CIFAR10_MEAN = (125.307 / 255, 122.95 / 255, 113.865 / 255)
CIFAR10_STD = (62.993 / 255, 62.089 / 255, 66.705 / 255)
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')

#: The std of a standard normal truncated to [−2, 2] (timm's lecun_normal_ divides by it).
TRUNC_NORMAL_2SIGMA_STD = 0.87962566103423978

SCANS = ('sequential', 'parallel')


class PeerError(Exception):
    """A problem a user can cause or fix (bad path, corrupt file, bad option): printed as one line."""


# ---------------------------------------------------------------------------------------------
# Config (models/*.json, the loader of src/model/config.ts)

_KNOWN_FIELDS = {
    'name', 'img_size', 'in_chans', 'patch_size', 'embed_dim', 'depth', 'd_state', 'expand', 'd_conv',
    'dt_rank', 'num_classes', 'norm_eps', 'dt_min', 'dt_max', 'dt_init_floor', 'class_names', 'description',
}


@dataclass
class VimConfig:
    name: str
    img_size: int  # H = W
    patch_size: int  # P
    embed_dim: int  # D
    depth: int
    d_state: int = 16  # N
    expand: int = 2
    d_conv: int = 4  # K
    dt_rank: int = 0  # R
    num_classes: int = 10  # C
    norm_eps: float = 1e-5
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    class_names: List[str] = field(default_factory=list)

    @property
    def E(self) -> int:
        return self.expand * self.embed_dim

    @property
    def Np(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def L(self) -> int:
        return self.Np + 1

    @property
    def cls_pos(self) -> int:
        return self.Np // 2

    def to_json(self) -> dict:
        return {
            'name': self.name, 'img_size': self.img_size, 'in_chans': 3, 'patch_size': self.patch_size,
            'embed_dim': self.embed_dim, 'depth': self.depth, 'd_state': self.d_state, 'expand': self.expand,
            'd_conv': self.d_conv, 'dt_rank': self.dt_rank, 'num_classes': self.num_classes,
            'norm_eps': self.norm_eps, 'dt_min': self.dt_min, 'dt_max': self.dt_max,
            'dt_init_floor': self.dt_init_floor, 'class_names': list(self.class_names),
        }

    def describe(self) -> str:
        return (f'{self.name} (D={self.embed_dim}, depth {self.depth}, N={self.d_state}, E={self.E}, '
                f'R={self.dt_rank}, K={self.d_conv}, patch {self.patch_size} on {self.img_size}×{self.img_size} '
                f'images, {self.num_classes} classes)')


def _pos_int(raw: dict, key: str, default, where: str) -> int:
    v = raw.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise PeerError(f'{where}: expected a positive integer for {key} but received {json.dumps(v)}')
    return v


def _pos_num(raw: dict, key: str, default, where: str) -> float:
    v = raw.get(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise PeerError(f'{where}: expected a positive number for {key} but received {json.dumps(v)}')
    return float(v)


def resolve_config(raw, where: str = 'model config') -> VimConfig:
    """Validate a config object (the models/*.json form, or a checkpoint's metadata) and resolve it."""
    if not isinstance(raw, dict):
        raise PeerError(f'{where}: expected a JSON object')
    for k in raw:
        if k not in _KNOWN_FIELDS:
            raise PeerError(f'{where}: unknown field "{k}" (known: {", ".join(sorted(_KNOWN_FIELDS))})')
    if raw.get('in_chans', 3) != 3:
        raise PeerError(f'{where}: in_chans must be 3 (RGB images); received {raw.get("in_chans")}')
    D = _pos_int(raw, 'embed_dim', None, where)
    dt_rank = raw.get('dt_rank', 'auto')
    R = math.ceil(D / 16) if dt_rank in (None, 'auto') else _pos_int(raw, 'dt_rank', None, where)
    cfg = VimConfig(
        name=raw['name'] if isinstance(raw.get('name'), str) and raw['name'] else 'vim',
        img_size=_pos_int(raw, 'img_size', 32, where),
        patch_size=_pos_int(raw, 'patch_size', None, where),
        embed_dim=D,
        depth=_pos_int(raw, 'depth', None, where),
        d_state=_pos_int(raw, 'd_state', 16, where),
        expand=_pos_int(raw, 'expand', 2, where),
        d_conv=_pos_int(raw, 'd_conv', 4, where),
        dt_rank=R,
        num_classes=_pos_int(raw, 'num_classes', 10, where),
        norm_eps=_pos_num(raw, 'norm_eps', 1e-5, where),
        dt_min=_pos_num(raw, 'dt_min', 1e-3, where),
        dt_max=_pos_num(raw, 'dt_max', 1e-1, where),
        dt_init_floor=_pos_num(raw, 'dt_init_floor', 1e-4, where),
    )
    if cfg.img_size % cfg.patch_size != 0:
        raise PeerError(f'{where}: patch_size {cfg.patch_size} does not divide img_size {cfg.img_size}')
    if cfg.Np < 2:
        raise PeerError(f'{where}: patch_size {cfg.patch_size} leaves fewer than 2 patches')
    if cfg.dt_min >= cfg.dt_max:
        raise PeerError(f'{where}: dt_min ({cfg.dt_min}) must be below dt_max ({cfg.dt_max})')
    if cfg.d_conv < 2:
        raise PeerError(f'{where}: d_conv must be at least 2; received {cfg.d_conv}')
    names = raw.get('class_names')
    if names is not None:
        if not isinstance(names, list) or len(names) != cfg.num_classes or not all(isinstance(s, str) for s in names):
            raise PeerError(f'{where}: class_names must be {cfg.num_classes} strings')
        cfg.class_names = list(names)
    else:
        cfg.class_names = list(CIFAR10_CLASSES) if cfg.num_classes == 10 else [f'class {i}' for i in range(cfg.num_classes)]
    return cfg


def load_config(name_or_path: str) -> VimConfig:
    """A config by name (a file in models/, e.g. 'vim-tiny') or by path to a JSON file."""
    if name_or_path.endswith('.json') or '/' in name_or_path:
        candidates = [Path(name_or_path)]
    else:
        candidates = [MODELS_DIR / f'{name_or_path}.json', Path(name_or_path)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        known = sorted(p.stem for p in MODELS_DIR.glob('*.json')) if MODELS_DIR.is_dir() else []
        raise PeerError(f'unknown model "{name_or_path}": no such config file; use one of {", ".join(known)} or a path to a .json config')
    try:
        raw = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise PeerError(f'{path}: not a readable JSON file ({e})') from None
    return resolve_config(raw, str(path))


# ---------------------------------------------------------------------------------------------
# The selective scan

def scan_sequential(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                    Dskip: torch.Tensor) -> torch.Tensor:
    """
    y (G, B, L, E) = C_t · h_t + D ⊙ u_t with h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t u_t ⊗ B_t, h_{−1} = 0,
    as a Python loop over the L tokens (one addcmul per token on (G, B, E, N) states).

    u, delta (G, B, L, E); A (G, E, N) (already −exp(A_log)); Bm, Cm (G, B, L, N); Dskip (G, E).
    The scan runs token-major, (L, G, B, E, N), so every step reads contiguous slices.
    """
    dl = delta.permute(2, 0, 1, 3)  # (L, G, B, E)
    ul = u.permute(2, 0, 1, 3)  # (L, G, B, E)
    dA = torch.exp(dl.unsqueeze(-1) * A.unsqueeze(1))  # (L, G, B, E, N)
    dBu = (dl * ul).unsqueeze(-1) * Bm.permute(2, 0, 1, 3).unsqueeze(-2)  # (L, G, B, E, N)
    # unbind, not dA[t]: the backward of L unbound views is one stack, where L indexings would each
    # write a zero-filled (L, G, B, E, N) gradient (O(L²) memory traffic).
    dA_t, dBu_t = dA.unbind(0), dBu.unbind(0)  # L × (G, B, E, N)
    h = dBu_t[0]  # (G, B, E, N)
    hs = [h]
    for t in range(1, len(dA_t)):
        h = torch.addcmul(dBu_t[t], dA_t[t], h)
        hs.append(h)
    H = torch.stack(hs)  # (L, G, B, E, N)
    y = torch.matmul(H, Cm.permute(2, 0, 1, 3).unsqueeze(-1)).squeeze(-1)  # (L, G, B, E)
    return y.permute(1, 2, 0, 3) + Dskip[:, None, None, :] * u  # (G, B, L, E)


#: Tokens per chunk of the parallel scan.
PARALLEL_CHUNK = 8
#: The largest exponent the parallel scan lets exp() see, per dtype: e^64 ≈ 6e27 leaves f32 (max 3.4e38)
#: room for sums of many terms; e^640 does the same for f64 (max 1.8e308).
PARALLEL_EXP_RANGE = {torch.float32: 64.0, torch.float64: 640.0}


def parallel_log_a_min(dtype: torch.dtype, chunk: int = PARALLEL_CHUNK) -> float:
    """The per-token log-decay floor of the parallel scan: −2·range/chunk (f32, 8 tokens: −16; f64: −160)."""
    return -2.0 * PARALLEL_EXP_RANGE.get(dtype, 64.0) / chunk


def scan_parallel(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                  Dskip: torch.Tensor, chunk: int = PARALLEL_CHUNK, log_a_min: Optional[float] = None) -> torch.Tensor:
    """
    The same y as scan_sequential, as a chunked scan in log space: depth ⌈L/T⌉ instead of L.

    With ℓ_t = Δ_t·A = log a_t (exact, ≤ 0) and b_t = Δ_t u_t ⊗ B_t, inside a chunk of T tokens
    that starts from state H (the state after the previous chunk):
        c_t = Σ_{k ≤ t in chunk} ℓ_k                           (chunk-local cumulative log-decay)
        h_t = exp(c_t)·H + Σ_{k ≤ t} exp(c_t − c_k)·b_k
            = exp(c_t − m)·(exp(m)·H + cumsum_k(exp(m − c_k)·b_k))
    with m = c_last/2, the middle of the chunk's log range, so both exponentials stay within ±|c_last|/2.
    Then a sequential pass over the ⌈L/T⌉ chunk boundaries gives each chunk's H. Every exponent is
    bounded because ℓ_t is floored at log_a_min (default parallel_log_a_min: −16 in f32 with T = 8,
    so a decay below e^−16 ≈ 1.1e-7 counts as that, which changes h_t by at most 1.1e-7·|h_{t−1}|;
    −160 in f64), so |c| ≤ T·|log_a_min| and no exponent exceeds ±64 (f64: ±640): exp never
    overflows, whatever Δ is. Padding tokens (Δ = 0, so a = 1 and b = 0) fill the last chunk and
    are dropped at the end.

    u, delta (G, B, L, E); A (G, E, N); Bm, Cm (G, B, L, N); Dskip (G, E) → y (G, B, L, E).
    """
    G, Bsz, L, E = u.shape
    N = A.shape[-1]
    T = max(1, min(chunk, L))
    if log_a_min is None:
        log_a_min = parallel_log_a_min(u.dtype, T)
    nC = -(-L // T)
    Lp = nC * T
    if Lp != L:
        pad = (0, 0, 0, Lp - L)
        delta_p, u_p, B_p = F.pad(delta, pad), F.pad(u, pad), F.pad(Bm, pad)
    else:
        delta_p, u_p, B_p = delta, u, Bm
    la = delta_p.unsqueeze(-1) * A[:, None, None]  # (G, B, Lp, E, N) log a_t ≤ 0
    floor = la.new_full((), log_a_min)
    la = torch.where(la > floor, la, floor)
    c = la.view(G, Bsz, nC, T, E, N).cumsum(3)  # (G, B, nC, T, E, N) chunk-local, in [T·log_a_min, 0]
    c_last = c[:, :, :, -1]  # (G, B, nC, E, N)
    m = 0.5 * c_last  # (G, B, nC, E, N)
    e_neg = torch.exp(m.unsqueeze(3) - c)  # (G, B, nC, T, E, N) exp(m − c_k) ∈ [e^{T·lo/2}, e^{−T·lo/2}]
    b = ((delta_p * u_p).unsqueeze(-1) * B_p.unsqueeze(-2)).view(G, Bsz, nC, T, E, N)  # Δ u ⊗ B
    S = (b * e_neg).cumsum(3)  # (G, B, nC, T, E, N)
    # The state at each chunk's end from inside the chunk, and the chunk's whole decay.
    h_last = S[:, :, :, -1] / e_neg[:, :, :, -1]  # (G, B, nC, E, N)
    decay = torch.exp(c_last)  # (G, B, nC, E, N)
    h_last_j, decay_j = h_last.unbind(2), decay.unbind(2)  # nC × (G, B, E, N)
    H = torch.zeros_like(h_last_j[0])  # (G, B, E, N) the state before the first chunk
    carries = []
    for j in range(nC):
        carries.append(H)
        if j + 1 < nC:
            H = torch.addcmul(h_last_j[j], decay_j[j], H)
    Hin = torch.stack(carries, 2)  # (G, B, nC, E, N) the state entering each chunk
    h = (S + (torch.exp(m) * Hin).unsqueeze(3)) / e_neg  # (G, B, nC, T, E, N)
    C_p = F.pad(Cm, (0, 0, 0, Lp - L)) if Lp != L else Cm
    y = torch.matmul(h.view(G, Bsz, Lp, E, N), C_p.unsqueeze(-1)).squeeze(-1)  # (G, B, Lp, E)
    if Lp != L:
        y = y[:, :, :L]
    return y + Dskip[:, None, None, :] * u


def selective_scan(u, delta, A, Bm, Cm, Dskip, impl: str = 'sequential', **kw) -> torch.Tensor:
    if impl == 'sequential':
        return scan_sequential(u, delta, A, Bm, Cm, Dskip)
    if impl == 'parallel':
        return scan_parallel(u, delta, A, Bm, Cm, Dskip, **kw)
    raise PeerError(f'unknown scan "{impl}"; expected one of {", ".join(SCANS)}')


# ---------------------------------------------------------------------------------------------
# The model

class RMSNorm(nn.Module):
    """out = x · rsqrt(mean(x²) + eps) · weight, computed in at least float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)  # weight (D, 3, P, P)


class Mixer(nn.Module):
    """Bidirectional Mamba (bimamba v2) with the project's parameter names."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        D, E, N, R, K = cfg.embed_dim, cfg.E, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.E, self.N, self.R, self.K = E, N, R, K
        self.in_proj = nn.Linear(D, 2 * E, bias=False)  # (2E, D)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1)  # weight (E, 1, K), bias (E)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # (R+2N, E)
        self.dt_proj = nn.Linear(R, E, bias=True)  # (E, R), (E)
        self.A_log = nn.Parameter(torch.zeros(E, N))
        self.D = nn.Parameter(torch.ones(E))
        self.conv1d_b = nn.Conv1d(E, E, K, groups=E, padding=K - 1)
        self.x_proj_b = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj_b = nn.Linear(R, E, bias=True)
        self.A_b_log = nn.Parameter(torch.zeros(E, N))
        self.D_b = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, D, bias=False)  # (D, E)

    def forward(self, hn: torch.Tensor, scan: str) -> torch.Tensor:
        Bsz, L, _ = hn.shape
        E, N, R, K = self.E, self.N, self.R, self.K
        xz = self.in_proj(hn)  # (B, L, 2E)
        x, z = xz[..., :E], xz[..., E:]  # (B, L, E) each
        # Both directions at once: direction 1 is the token-reversed sequence.
        xs = torch.stack([x, x.flip(1)])  # (G, B, L, E)
        xc = xs.permute(1, 0, 3, 2).reshape(Bsz, 2 * E, L)  # (B, G·E, L) channels (direction, e)
        w = torch.cat([self.conv1d.weight, self.conv1d_b.weight])  # (G·E, 1, K)
        bias = torch.cat([self.conv1d.bias, self.conv1d_b.bias])  # (G·E)
        u = F.silu(F.conv1d(xc, w, bias, padding=K - 1, groups=2 * E)[..., :L])  # (B, G·E, L) causal
        u = u.reshape(Bsz, 2, E, L).permute(1, 0, 3, 2).reshape(2, Bsz * L, E)  # (G, B·L, E)
        wx = torch.stack([self.x_proj.weight, self.x_proj_b.weight])  # (G, R+2N, E)
        xdbl = torch.bmm(u, wx.transpose(1, 2))  # (G, B·L, R+2N)
        wdt = torch.stack([self.dt_proj.weight, self.dt_proj_b.weight])  # (G, E, R)
        bdt = torch.stack([self.dt_proj.bias, self.dt_proj_b.bias])  # (G, E)
        dt = torch.baddbmm(bdt.unsqueeze(1).to(xdbl.dtype), xdbl[..., :R], wdt.transpose(1, 2))  # (G, B·L, E)
        # The scan in at least float32, whatever autocast chose for the matmuls.
        f = torch.promote_types(hn.dtype, torch.float32)
        delta = F.softplus(dt.to(f)).view(2, Bsz, L, E)  # (G, B, L, E)
        Bm = xdbl[..., R:R + N].to(f).view(2, Bsz, L, N)  # (G, B, L, N)
        Cm = xdbl[..., R + N:].to(f).view(2, Bsz, L, N)  # (G, B, L, N)
        A = -torch.exp(torch.stack([self.A_log, self.A_b_log]).to(f))  # (G, E, N)
        Dskip = torch.stack([self.D, self.D_b]).to(f)  # (G, E)
        with torch.autocast(device_type=hn.device.type, enabled=False):  # the scan's matmul stays f32 too
            y = selective_scan(u.to(f).view(2, Bsz, L, E), delta, A, Bm, Cm, Dskip, scan)  # (G, B, L, E)
        # (y_f ⊙ SiLU(z) + reverse(y_b ⊙ SiLU(reverse z))) / 2 = SiLU(z) ⊙ (y_f + reverse(y_b)) / 2
        comb = F.silu(z.to(f)) * (y[0] + y[1].flip(1)) * 0.5  # (B, L, E)
        return self.out_proj(comb)  # (B, L, D)


class Block(nn.Module):
    """The mixer on the normalised residual stream: h = mixer(RMSNorm(r) · w). The add r = r + h is the caller's."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.mixer = Mixer(cfg)

    def forward(self, r: torch.Tensor, scan: str) -> torch.Tensor:
        return self.mixer(self.norm(r), scan)


class VimPeer(nn.Module):
    """
    The Vim classifier. forward(images) takes raw CIFAR bytes (B, 3, H, W) uint8 (normalised inside,
    as our engine does) or an already normalised float tensor, and returns logits (B, C).
    """

    def __init__(self, cfg: VimConfig, scan: str = 'sequential'):
        super().__init__()
        if scan not in SCANS:
            raise PeerError(f'unknown scan "{scan}"; expected one of {", ".join(SCANS)}')
        self.cfg = cfg
        self.scan = scan
        D, L = cfg.embed_dim, cfg.L
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L, D))
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm_f = RMSNorm(D, cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(images / 255 − mean_c) / std_c in the model's float dtype."""
        dtype, dev = self.pos_embed.dtype, images.device
        mean = torch.tensor(CIFAR10_MEAN, dtype=dtype, device=dev).view(1, 3, 1, 1)  # constants in the model's dtype
        std = torch.tensor(CIFAR10_STD, dtype=dtype, device=dev).view(1, 3, 1, 1)
        return (images.to(dtype) / 255 - mean) / std

    def forward(self, images: torch.Tensor, scan: Optional[str] = None) -> torch.Tensor:
        scan = scan or self.scan
        cfg = self.cfg
        x = self.normalize(images) if images.dtype == torch.uint8 else images  # (B, 3, H, W)
        Bsz = x.shape[0]
        # (B, Np, D), patch t = py·(W/P) + px; back in the model's dtype when autocast made it bf16
        p = self.patch_embed.proj(x).flatten(2).transpose(1, 2).to(self.pos_embed.dtype)
        c = cfg.cls_pos
        tokens = torch.cat([p[:, :c], self.cls_token.expand(Bsz, -1, -1), p[:, c:]], 1)  # (B, L, D)
        h = tokens + self.pos_embed
        r = None
        for layer in self.layers:
            r = h if r is None else r + h  # the residual stream, f32 (the mixer's output may be bf16)
            h = layer(r, scan)
        r = r + h
        xf = self.norm_f(r[:, c])  # (B, D) only the class token is read
        return self.head(xf)  # (B, C)


def compile_blocks(model: 'VimPeer', **compile_kw) -> 'VimPeer':
    """
    torch.compile each block in place (regional compilation): with dynamo's inlining of built-in
    nn.Modules (the default since torch 2.5) the guards do not depend on which block runs, so the
    blocks can share one compiled graph; the recompile limits are raised so that releases that
    compile each block once still compile them all. The patch embedding, residual adds, final norm
    and head stay eager.
    """
    import torch._dynamo as dynamo
    for key in ('recompile_limit', 'cache_size_limit', 'accumulated_recompile_limit', 'accumulated_cache_size_limit'):
        if hasattr(dynamo.config, key):  # older releases compile each block once: let all of them
            setattr(dynamo.config, key, max(getattr(dynamo.config, key), 4 * len(model.layers) + 8))
    for blk in model.layers:
        blk.compile(**compile_kw)
    return model


# ---------------------------------------------------------------------------------------------
# Initialisation (src/model/init.ts: the PyTorch Vim's rules)

def _uniform(g: torch.Generator, shape, bound: float) -> torch.Tensor:
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound


def _trunc_normal(g: torch.Generator, shape, std: float, a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """N(0, std²) truncated to the absolute bounds [a, b] (timm's trunc_normal_), by the inverse CDF."""
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    lo, hi = cdf(a / std), cdf(b / std)
    p = lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)
    return (torch.erfinv(2 * p - 1) * math.sqrt(2) * std).clamp(a, b)


def init_vim_(model: VimPeer, seed: int = 0, backward_dt_bias: str = 'dt-init') -> VimPeer:
    """
    Initialise every parameter in place by the rules of src/model/init.ts (the PyTorch Vim's):
    lecun-normal patch embedding, trunc-normal(0.02) cls_token, pos_embed and head weight, zero
    biases, unit norms, U(±1/√fan_in) projections and convolutions, dt_proj U(±R^-½) with Δ
    log-uniform in [dt_min, dt_max] through the inverse softplus in its bias, A_log = log(1…N),
    D = 1, out_proj U(±1/√E)/√depth. backward_dt_bias 'zero' leaves dt_proj_b.bias at 0 (as the
    PyTorch Vim ends up); 'dt-init' (the project's default) draws it like the forward one.
    Seeded draws from one CPU generator, so the values depend on the seed only, not on the device.
    """
    if backward_dt_bias not in ('dt-init', 'zero'):
        raise PeerError(f"backward_dt_bias must be 'dt-init' or 'zero', not {backward_dt_bias!r}")
    cfg = model.cfg
    D, E, N, R, K, P = cfg.embed_dim, cfg.E, cfg.d_state, cfg.dt_rank, cfg.d_conv, cfg.patch_size
    g = torch.Generator().manual_seed(int(seed))

    def put(t: torch.Tensor, v: torch.Tensor) -> None:
        with torch.no_grad():
            t.copy_(v.reshape(t.shape).to(t.dtype))

    def dt_bias() -> torch.Tensor:
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(lo + (hi - lo) * torch.rand(E, generator=g, dtype=torch.float64)).clamp(min=cfg.dt_init_floor)
        return dt + torch.log(-torch.expm1(-dt))  # inverse softplus

    pe = model.patch_embed.proj
    put(pe.weight, _trunc_normal(g, pe.weight.shape, 1.0) * (math.sqrt(1 / (3 * P * P)) / TRUNC_NORMAL_2SIGMA_STD))
    put(pe.bias, torch.zeros(D))
    put(model.cls_token, _trunc_normal(g, model.cls_token.shape, 0.02))
    put(model.pos_embed, _trunc_normal(g, model.pos_embed.shape, 0.02))
    a_log = torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1)  # (E, N)
    for blk in model.layers:
        m = blk.mixer
        put(blk.norm.weight, torch.ones(D))
        put(m.in_proj.weight, _uniform(g, m.in_proj.weight.shape, 1 / math.sqrt(D)))
        for d, (conv, xp, dtp, alog, dsk) in enumerate((
            (m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D),
            (m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b),
        )):
            put(conv.weight, _uniform(g, conv.weight.shape, 1 / math.sqrt(K)))
            put(conv.bias, _uniform(g, conv.bias.shape, 1 / math.sqrt(K)))
            put(xp.weight, _uniform(g, xp.weight.shape, 1 / math.sqrt(E)))
            put(dtp.weight, _uniform(g, dtp.weight.shape, 1 / math.sqrt(R)))
            put(dtp.bias, dt_bias() if d == 0 or backward_dt_bias == 'dt-init' else torch.zeros(E))
            put(alog, a_log)
            put(dsk, torch.ones(E))
        put(m.out_proj.weight, _uniform(g, m.out_proj.weight.shape, 1 / math.sqrt(E)) / math.sqrt(cfg.depth))
    put(model.norm_f.weight, torch.ones(D))
    put(model.head.weight, _trunc_normal(g, model.head.weight.shape, 0.02))
    put(model.head.bias, torch.zeros(cfg.num_classes))
    return model


def build_vim(cfg: VimConfig, scan: str = 'sequential', seed: int = 0, backward_dt_bias: str = 'dt-init') -> VimPeer:
    return init_vim_(VimPeer(cfg, scan), seed, backward_dt_bias)


def decays(name: str) -> bool:
    """
    Whether AdamW decays a parameter: the matrices (patch_embed.proj.weight, in_proj, conv1d(_b)
    weights, x_proj(_b), dt_proj(_b) weights, out_proj, head.weight); never A_log, D, biases,
    norms, cls_token or pos_embed (the `decay` flags of src/model/params.ts).
    """
    if name in ('cls_token', 'pos_embed', 'norm_f.weight') or name.endswith('.bias') or name.endswith('norm.weight'):
        return False
    leaf = name.rsplit('.', 1)[-1]
    return leaf not in ('A_log', 'A_b_log', 'D', 'D_b')


def param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """AdamW parameter groups with the project's decay mask."""
    dec = [p for n, p in model.named_parameters() if decays(n)]
    nodec = [p for n, p in model.named_parameters() if not decays(n)]
    return [{'params': dec, 'weight_decay': weight_decay}, {'params': nodec, 'weight_decay': 0.0}]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Safetensors (parsed here: 8-byte little-endian header length, JSON header, raw data)

_DTYPES = {'F32': ('<f4', 4), 'F16': ('<f2', 2), 'BF16': ('<u2', 2)}


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], Dict[str, str]]:
    """
    Read a safetensors file: (tensors widened to float32 by name, __metadata__, stored dtype by name).
    Raises PeerError naming the file on any problem (missing, truncated, not safetensors, corrupt).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PeerError(f'{path}: no such file; check the path') from None
    except IsADirectoryError:
        raise PeerError(f'{path}: is a folder, not a safetensors file; pass the .safetensors file inside it') from None
    except PermissionError:
        raise PeerError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as e:
        raise PeerError(f'{path}: cannot read the file ({e})') from None
    hint = 'is it a safetensors file? Re-create it or choose another file'
    if len(data) < 8:
        raise PeerError(f'{path}: the file is {len(data)} bytes long, too short for a safetensors header; {hint}')
    (n,) = struct.unpack('<Q', data[:8])
    if n > len(data) - 8:
        raise PeerError(f'{path}: the header length field says {n} bytes but only {len(data) - 8} follow it; '
                        f'the file is truncated or not safetensors; {hint}')
    try:
        header = json.loads(data[8:8 + n].decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise PeerError(f'{path}: the safetensors header is not valid JSON ({e}); {hint}') from None
    if not isinstance(header, dict):
        raise PeerError(f'{path}: the safetensors header is not a JSON object; {hint}')
    start = 8 + n
    body = len(data) - start
    meta = header.pop('__metadata__', {}) or {}
    if not isinstance(meta, dict):
        raise PeerError(f'{path}: "__metadata__" in the header must be an object of strings')
    tensors: Dict[str, torch.Tensor] = {}
    dtypes: Dict[str, str] = {}
    for name, e in header.items():
        where = f'{path}: tensor "{name}"'
        if not isinstance(e, dict) or not isinstance(e.get('dtype'), str):
            raise PeerError(f'{where}: header entry must be an object with dtype, shape and data_offsets')
        if e['dtype'] not in _DTYPES:
            raise PeerError(f'{where}: dtype {e["dtype"]} is not supported; only F32, F16 and BF16 tensors can be read')
        shape, offs = e.get('shape'), e.get('data_offsets')
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise PeerError(f'{where}: shape must be a list of non-negative integers but is {json.dumps(shape)}')
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) and o >= 0 for o in offs)
                or offs[0] > offs[1]):
            raise PeerError(f'{where}: data_offsets must be [begin, end] with 0 ≤ begin ≤ end but is {json.dumps(offs)}')
        np_dtype, size = _DTYPES[e['dtype']]
        count = int(np.prod(shape)) if shape else 1
        if offs[1] > body:
            raise PeerError(f'{where}: its data ends at byte {start + offs[1]} but the file has only {len(data)} bytes; '
                            'the file is truncated; copy it again or use another file')
        if offs[1] - offs[0] != count * size:
            raise PeerError(f'{where}: data_offsets {offs} span {offs[1] - offs[0]} bytes but shape {shape} of '
                            f'{e["dtype"]} needs {count * size}; the file is corrupt')
        raw = np.frombuffer(data, dtype=np_dtype, count=count, offset=start + offs[0])
        if e['dtype'] == 'BF16':
            arr = (raw.astype(np.uint32) << 16).view(np.float32)  # bf16 is the top half of an f32
        else:
            arr = raw.astype(np.float32)
        tensors[name] = torch.from_numpy(arr.reshape(shape).copy())
        dtypes[name] = e['dtype']
    return tensors, {str(k): str(v) for k, v in meta.items()}, dtypes


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None,
                      dtype: str = 'F32') -> None:
    """
    Write tensors (by name, in the given order) as safetensors with `dtype` F32, F16 or BF16 (BF16
    rounded to nearest even from f32) and string metadata, through a temporary file and a rename.
    """
    if dtype not in _DTYPES:
        raise PeerError(f'cannot write dtype {dtype}; expected F32, F16 or BF16')
    header: Dict[str, object] = {}
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors.items():
        a = t.detach().to('cpu', torch.float32).contiguous().numpy()
        if dtype == 'F32':
            raw = a.astype('<f4').tobytes()
        elif dtype == 'F16':
            raw = a.astype('<f2').tobytes()
        else:
            bits = a.view(np.uint32).astype(np.uint64)
            raw = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype('<u2').tobytes()
        header[name] = {'dtype': dtype, 'shape': list(a.shape), 'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode('utf-8')
    head += b' ' * ((8 - len(head) % 8) % 8)
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'wb') as f:
            f.write(struct.pack('<Q', len(head)))
            f.write(head)
            for raw in blobs:
                f.write(raw)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PeerError(f'cannot write {path} ({e})') from None


def save_checkpoint(model: 'VimPeer', path: str, dtype: str = 'F32', extra_meta: Optional[dict] = None) -> None:
    """A checkpoint our loader (src/model/checkpoint.ts) reads: our names, the config in the metadata."""
    meta = {'format': 'vim-webgpu', 'config': json.dumps(model.cfg.to_json())}
    for k, v in (extra_meta or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    write_safetensors(path, dict(model.state_dict()), meta, dtype)


def load_checkpoint(path: str, model_name: Optional[str] = None, scan: str = 'sequential',
                    ignore_prefixes: Tuple[str, ...] = ('train.', 'optim.')) -> Tuple[VimPeer, dict]:
    """
    Build a VimPeer from one of our checkpoints: the config from its metadata (or model_name when
    the file carries none), every parameter by name with its exact shape. Tensors under
    ignore_prefixes (training state) are skipped; anything else unexpected, a missing tensor or a
    wrong shape raises PeerError. Returns (model, info) with the metadata and stored dtypes.
    """
    tensors, meta, dtypes = read_safetensors(path)
    if 'config' in meta:
        try:
            raw = json.loads(meta['config'])
        except ValueError as e:
            raise PeerError(f'{path}: the "config" in the checkpoint\'s metadata is not valid JSON ({e}); the file is damaged') from None
        cfg = resolve_config(raw, f'{path} (model config in the metadata)')
    elif model_name is not None:
        cfg = load_config(model_name)
    else:
        raise PeerError(f"{path}: the checkpoint's metadata holds no model config; pass --model with the config it was trained with")
    model = VimPeer(cfg, scan)
    want = model.state_dict()
    problems, skipped = [], []
    for name, t in want.items():
        if name not in tensors:
            problems.append(f'tensor "{name}" is missing (expected shape {list(t.shape)})')
        elif list(tensors[name].shape) != list(t.shape):
            problems.append(f'tensor "{name}" has shape {list(tensors[name].shape)} but {cfg.name} expects {list(t.shape)}')
    for name, t in tensors.items():
        if name in want:
            continue
        if name.startswith(ignore_prefixes):
            skipped.append(name)
        else:
            problems.append(f'unexpected tensor "{name}" (shape {list(t.shape)}) that {cfg.name} has no parameter for')
    if problems:
        more = f'; and {len(problems) - 6} more' if len(problems) > 6 else ''
        raise PeerError(f'checkpoint {path} does not match its config {cfg.describe()}: {"; ".join(problems[:6])}{more}')
    model.load_state_dict({k: tensors[k] for k in want}, strict=True)
    return model, {'config': cfg, 'metadata': meta, 'dtypes': sorted(set(dtypes[k] for k in want)), 'skipped': skipped}


# ---------------------------------------------------------------------------------------------
# CIFAR-10 test images (the official binary format)

CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32


def default_data_dir() -> Path:
    env = os.environ.get('VIM_DATA_DIR', '').strip()
    return Path(env).resolve() if env else REPO_ROOT / 'datasets'


def read_cifar10_test(indices, data_dir: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Images (n, 3, 32, 32) uint8 and labels (n) of the given records of test_batch.bin: 10,000 records
    of one label byte and the R, G, B planes (1024 bytes each). data_dir is the data dir or its
    cifar-10-batches-bin folder (default: $VIM_DATA_DIR, else datasets/).
    """
    d = Path(data_dir).resolve() if data_dir else default_data_dir()
    folder = d if d.name == 'cifar-10-batches-bin' else d / 'cifar-10-batches-bin'
    path = folder / 'test_batch.bin'
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PeerError(f'CIFAR-10 file {path} cannot be read ({e.strerror}); run `npm run data` to fetch it, '
                        'or pass --data-dir') from None
    if len(data) != 10000 * CIFAR10_RECORD_BYTES:
        raise PeerError(f'CIFAR-10 file {path} has {len(data)} bytes, expected {10000 * CIFAR10_RECORD_BYTES}; '
                        'run `npm run data` to fetch it again')
    rec = np.frombuffer(data, dtype=np.uint8).reshape(10000, CIFAR10_RECORD_BYTES)
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= 10000):
        raise PeerError(f'test image indices must be in 0…9999; received {idx.min()}…{idx.max()}')
    sel = rec[idx]
    images = torch.from_numpy(sel[:, 1:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(sel[:, 0].astype(np.int64))
    return images, labels
