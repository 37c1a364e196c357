"""StyleEncoder: a motion clip (FlameSequence window) -> style z (128-d).

z is L2-normalised to a sphere of radius sqrt(dim), so each component has about unit variance: the target space
of the diffusion prior, and a space where distances between styles are comparable."""

from __future__ import annotations

import math

import torch
from torch import nn

from avitalk.dropout import cheap_dropouts

from .layers import masked_mean, sinusoidal


class StyleEncoder(nn.Module):
    def __init__(self, *, n_motion: int, d_model: int, layers: int, heads: int, style_dim: int, dropout: float):
        super().__init__()
        self.style_dim = style_dim
        self.inp = nn.Linear(n_motion, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.body = cheap_dropouts(nn.TransformerEncoder(layer, layers, enable_nested_tensor=False))
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, style_dim))
        self.register_buffer("motion_mean", torch.zeros(n_motion))
        self.register_buffer("motion_std", torch.ones(n_motion))

    def set_motion_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.motion_mean.copy_(mean)
        self.motion_std.copy_(std.clamp_min(1e-3))

    def forward(self, motion: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """motion [B, T, n_motion], mask [B, T] (True = real frame) -> z [B, style_dim]."""
        T = motion.shape[1]
        x = self.inp((motion - self.motion_mean) / self.motion_std) + sinusoidal(torch.arange(T, device=motion.device), self.inp.out_features)
        x = self.body(x, src_key_padding_mask=None if mask is None else ~mask)
        z = self.out(masked_mean(x, mask))
        return normalize_style(z)


def normalize_style(z: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(z, dim=-1) * math.sqrt(z.shape[-1])
