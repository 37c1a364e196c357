"""A small Q-Former: learned queries that read the speech features by cross-attention, then a linear projection into
the LLM's embedding space (the "speech tokens")."""

from __future__ import annotations

import torch
from torch import nn

from avitalk.dropout import Dropout
from avitalk.types import FEATURE_RATE, LISTEN_WINDOW_S


class QFormerLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.n1, self.self_attn = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.n2, self.cross = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.n3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), Dropout(dropout), nn.Linear(ff, d))

    def forward(self, q: torch.Tensor, feats: torch.Tensor, kpm: torch.Tensor | None) -> torch.Tensor:
        h = self.n1(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        q = q + self.cross(self.n2(q), feats, feats, key_padding_mask=kpm, need_weights=False)[0]
        return q + self.mlp(self.n3(q))


class Listener(nn.Module):
    """The utterance as one vector: per-frame projection, two residual temporal convolutions (about 0.2 s of context
    each), then attentive statistics pooling (attention-weighted mean and standard deviation) beside the plain masked
    mean and standard deviation. Emotion in a voice is mostly global (level, spread and movement of pitch, energy,
    timbre); on unseen RAVDESS actors this network alone, on the same frozen features, read 73% against 69% for a
    linear probe of the mean and standard deviation (3 leave-6-actors-out folds)."""

    def __init__(self, n_in: int, hidden: int, out: int, dropout: float):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(n_in), Dropout(dropout), nn.Linear(n_in, hidden), nn.GELU())
        self.conv = nn.ModuleList([nn.Conv1d(hidden, hidden, 5, padding=2), nn.Conv1d(hidden, hidden, 5, padding=2)])
        self.att = nn.Linear(hidden, 1)
        self.out = nn.Sequential(Dropout(dropout), nn.Linear(4 * hidden, out))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """feats [B, T, n_in], mask [B, T] (True = real) -> [B, out]."""
        m = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device) if mask is None else mask
        w = m[..., None].to(feats.dtype)
        h = self.inp(feats) * w
        c = h
        for conv in self.conv:  # padding reads as zeros at every layer, as past the clip's ends
            c = nn.functional.gelu(conv(c.transpose(1, 2)).transpose(1, 2)) * w
        h = h + c
        a = self.att(h).squeeze(-1).masked_fill(~m, float("-inf")).softmax(1).unsqueeze(-1)
        n = w.sum(1).clamp_min(1)
        mu_a = (a * h).sum(1)
        sd_a = ((a * (h - mu_a[:, None]) ** 2).sum(1) + 1e-5).sqrt()
        mu = (h * w).sum(1) / n
        sd = ((((h - mu[:, None]) ** 2) * w).sum(1) / n + 1e-5).sqrt()
        return self.out(torch.cat([mu_a, sd_a, mu, sd], -1))


class QFormer(nn.Module):
    def __init__(self, *, feature_dim: int, llm_dim: int, prosody_dim: int, d_model: int, num_queries: int, layers: int,
                 heads: int, dropout: float, conv_frontend: bool, pool: int, stats: bool, listener: int,
                 listener_dropout: float):
        super().__init__()
        self.pool = int(pool)  # average this many feature frames first (2: 50 Hz -> 25 Hz; half the attention cost)
        self.feature_dim, self.prosody_dim = feature_dim, prosody_dim
        self.inp = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d_model))
        # prosody channels get their own projection: next to 384 encoder dimensions they would be drowned out
        self.prosody = nn.Sequential(nn.Linear(prosody_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model)) if prosody_dim else None
        # a temporal convolution lets the queries read local dynamics (pitch movement, syllable rate)
        self.conv = nn.Conv1d(d_model, d_model, 5, padding=2) if conv_frontend else None
        self.pos = nn.Parameter(torch.randn(int(LISTEN_WINDOW_S * FEATURE_RATE) // self.pool, d_model) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, d_model) * 0.02)
        # utterance statistics (mean and standard deviation of every input channel over the clip) added to every query:
        # what a voice says about emotion is mostly global (level, spread and movement of pitch, energy, timbre), and a
        # linear read-out of exactly these statistics is the strongest speaker-independent baseline on real speech
        n_in = feature_dim + prosody_dim
        self.stats = (nn.Sequential(nn.LayerNorm(2 * n_in), Dropout(dropout), nn.Linear(2 * n_in, d_model), nn.GELU(),
                                    nn.Linear(d_model, d_model)) if stats and not listener else None)
        # the listener (replaces the plain statistics when on): its summary is added to every query and appended as
        # one more token, and the training heads read it directly (see pooled())
        self.listener = Listener(n_in, int(listener), d_model, listener_dropout) if listener else None
        self.layers = nn.ModuleList([QFormerLayer(d_model, heads, 4 * d_model, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, llm_dim)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, feature_dim (+ prosody_dim)] (50 Hz), mask [B, T] True = real -> (speech tokens [B, Q, llm_dim],
        queries [B, Q, d]); with a listener Q is num_queries + 1 (its summary last)."""
        T = feats.shape[1]
        if T > self.pos.shape[0] * self.pool:
            raise ValueError(f"at most {self.pos.shape[0] * self.pool} feature frames (30 s) per call, got {T}")
        summary = None
        if self.listener is not None:
            summary = self.listener(feats, mask)
        elif self.stats is not None:
            summary = self.utterance_stats(feats, mask)
        if self.pool > 1:
            pad = (-T) % self.pool
            m = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device) if mask is None else mask
            feats = nn.functional.pad(feats * m[..., None], (0, 0, 0, pad))
            m = nn.functional.pad(m, (0, pad))
            B, T2 = feats.shape[0], (T + pad) // self.pool
            n = m.view(B, T2, self.pool).sum(-1, keepdim=True).clamp_min(1)
            feats = feats.view(B, T2, self.pool, -1).sum(2) / n
            mask = m.view(B, T2, self.pool).any(-1)
            T = T2
        if feats.shape[-1] != self.feature_dim + self.prosody_dim:
            raise ValueError(f"expected {self.feature_dim} + {self.prosody_dim} feature channels, got {feats.shape[-1]}")
        x = self.inp(feats[..., : self.feature_dim])
        if self.prosody is not None:
            x = x + self.prosody(feats[..., self.feature_dim :])
        if self.conv is not None:
            if mask is not None:
                x = x * mask[..., None]
            x = x + nn.functional.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        x = x + self.pos[:T]
        q = self.queries.expand(feats.shape[0], -1, -1)
        if summary is not None:
            q = q + summary[:, None]
        kpm = None if mask is None or bool(mask.all()) else ~mask  # no mask when nothing is padded: same result, less work
        for layer in self.layers:
            q = layer(q, x, kpm)
        if self.listener is not None:
            q = torch.cat([q, summary[:, None]], 1)
        q = self.norm(q)
        return self.proj(q), q

    @property
    def pooled_dim(self) -> int:
        return self.queries.shape[1] * (2 if self.listener is not None else 1)

    def pooled(self, q: torch.Tensor) -> torch.Tensor:
        """[B, pooled_dim]: what the training heads (emotion, intensity, text embedding) read from forward()'s queries:
        their mean, and with a listener its summary token beside the mean of the others."""
        if self.listener is None:
            return q.mean(1)
        return torch.cat([q[:, :-1].mean(1), q[:, -1]], -1)

    def utterance_stats(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, d_model]: the projected mean and standard deviation over the real frames of each input channel."""
        m = (torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device) if mask is None else mask)
        w = m[..., None].to(feats.dtype)
        n = w.sum(1).clamp_min(1)
        mean = (feats * w).sum(1) / n
        std = (((feats - mean[:, None]) ** 2 * w).sum(1) / n).clamp_min(1e-8).sqrt()
        return self.stats(torch.cat([mean, std], -1))
