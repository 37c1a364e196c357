"""Building blocks shared by the stage-2 networks."""

from __future__ import annotations

import math

import torch
from torch import nn

from avitalk.dropout import Dropout


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., dim] sinusoidal embedding of (float) positions or timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    ang = positions.float()[..., None] * freqs
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose two LayerNorms are modulated by a condition (scale, shift and a gate per
    branch, initialised to identity): the style z steers every layer of the decoder."""

    def __init__(self, d: int, heads: int, ff: int, cond_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), Dropout(dropout), nn.Linear(ff, d))
        self.mod = nn.Linear(cond_dim, 6 * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.mod(cond).unsqueeze(1).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + s1) + b1
        h, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + (1 + g1) * self.drop(h)
        h = self.norm2(x) * (1 + s2) + b2
        return x + (1 + g2) * self.drop(self.mlp(h))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of [B, T, D] where mask [B, T] is True."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
