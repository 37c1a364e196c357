"""TalkingDecoder: audio features at 25 fps + style z -> expression [T, 50] + jaw [T, 3].

Non-autoregressive: a transformer over a window of frames whose every block is modulated by z (AdaLN). Any length
runs as overlapping windows cross-faded together (``generate``), which is also how it streams: a window needs
``window`` frames of audio, so the look-ahead is bounded by the window length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layers import AdaLNBlock, sinusoidal


class TalkingDecoder(nn.Module):
    def __init__(self, *, audio_dim: int, n_motion: int, d_model: int, layers: int, heads: int, ff: int, style_dim: int,
                 dropout: float, window: int, overlap: int, prosody_dim: int):
        super().__init__()
        self.window, self.overlap, self.n_motion = int(window), int(overlap), n_motion
        # the encoder's trailing prosody channels (relative loudness, pitch, voicing, ZCR) get their own projection:
        # inside a LayerNorm over hundreds of encoder channels they would be drowned out, and loudness is what says
        # that the mouth should rest in a pause
        self.prosody_dim = int(prosody_dim)
        feat = audio_dim - self.prosody_dim
        self.audio_in = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, d_model), nn.GELU(),
                                      nn.Linear(d_model, d_model))
        self.prosody = (nn.Sequential(nn.Linear(self.prosody_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
                        if self.prosody_dim else None)
        self.local = nn.Conv1d(d_model, d_model, kernel_size=5, padding=2, groups=d_model)  # short-range context
        self.blocks = nn.ModuleList([AdaLNBlock(d_model, heads, ff, style_dim, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_motion)
        # motion is predicted in units of the training data's per-channel spread (set by set_motion_stats)
        self.register_buffer("motion_mean", torch.zeros(n_motion))
        self.register_buffer("motion_std", torch.ones(n_motion))

    def set_motion_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.motion_mean.copy_(mean)
        self.motion_std.copy_(std.clamp_min(1e-3))

    def forward(self, audio: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """audio [B, T, audio_dim] (25 fps), z [B, style_dim] -> motion [B, T, n_motion] (in data units)."""
        T = audio.shape[1]
        if self.prosody is not None:
            x = self.audio_in(audio[..., : -self.prosody_dim]) + self.prosody(audio[..., -self.prosody_dim :])
        else:
            x = self.audio_in(audio)
        x = x + self.local(x.transpose(1, 2)).transpose(1, 2)
        x = x + sinusoidal(torch.arange(T, device=audio.device), x.shape[-1])
        kpm = None if mask is None else ~mask
        for blk in self.blocks:
            x = blk(x, z, kpm)
        return self.out(self.norm(x)) * self.motion_std + self.motion_mean

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Any length: audio [T, audio_dim], z [N, style_dim] -> motion [N, T, n_motion], window by window."""
        return self.generate_many([audio], [z])[0]

    @torch.no_grad()
    def generate_many(self, audios: list[torch.Tensor], zs: list[torch.Tensor],
                      max_windows: int = 512) -> list[torch.Tensor]:
        """Many clips at once: audios[i] [T_i, audio_dim], zs[i] [N_i, style_dim] -> motions[i] [N_i, T_i, n_motion].
        Every window of every clip and sample goes through the network in batches of up to ``max_windows`` windows of
        equal length (a clip shorter than the window is its own length), then each clip is stitched back; the same
        result as one clip at a time, in far fewer network calls."""
        from avitalk.audio import chunk_spans, stitch

        if len(audios) != len(zs):
            raise ValueError(f"{len(audios)} clips but {len(zs)} style sets")
        spans = [chunk_spans(a.shape[0], self.window, self.overlap) for a in audios]
        # (clip, sample, window) jobs grouped by window length
        groups: dict[int, list[tuple[int, int, int]]] = {}
        for i, (sp, z) in enumerate(zip(spans, zs)):
            for n in range(z.shape[0]):
                for w, (s, e) in enumerate(sp):
                    groups.setdefault(e - s, []).append((i, n, w))
        out: dict[tuple[int, int, int], np.ndarray] = {}
        for jobs in groups.values():
            for k in range(0, len(jobs), max_windows):
                part = jobs[k : k + max_windows]
                x = torch.stack([audios[i][spans[i][w][0] : spans[i][w][1]] for i, _, w in part])
                y = self.forward(x, torch.stack([zs[i][n] for i, n, _ in part])).cpu().numpy()
                out.update(zip(part, y))
        return [torch.as_tensor(np.stack([stitch([out[(i, n, w)] for w in range(len(sp))], sp, a.shape[0])
                                          for n in range(z.shape[0])]))
                for i, (a, z, sp) in enumerate(zip(audios, zs, spans))]
