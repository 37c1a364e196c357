"""Whisper's audio encoder in plain torch, with the parameter names of ``transformers``' ``WhisperEncoder`` (so the same
state dict loads into either): two GELU convolutions (the second with stride 2), sinusoidal positions stored as a
table, pre-LayerNorm transformer layers, a final LayerNorm.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


class WhisperAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class WhisperEncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = WhisperAttention(d, heads)
        self.self_attn_layer_norm, self.final_layer_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor, attention_mask=None) -> torch.Tensor:  # noqa: ARG002 - HF's call signature
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoderLite(nn.Module):
    """``forward(mel [B, n_mels, N])`` -> [B, N / 2, d_model] after the final LayerNorm; no padding to 30 s."""

    def __init__(self, d_model: int, encoder_layers: int, encoder_attention_heads: int, encoder_ffn_dim: int,
                 num_mel_bins: int = 80, max_source_positions: int = 1500):
        super().__init__()
        self.config = SimpleNamespace(d_model=d_model, encoder_layers=encoder_layers, num_mel_bins=num_mel_bins,
                                      encoder_attention_heads=encoder_attention_heads, encoder_ffn_dim=encoder_ffn_dim,
                                      max_source_positions=max_source_positions)
        self.conv1 = nn.Conv1d(num_mel_bins, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(max_source_positions, d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(d_model, encoder_attention_heads, encoder_ffn_dim)
                                    for _ in range(encoder_layers))
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)
