"""Whisper encoders through transformers (``openai/whisper-base`` ... ``large-v3`` from a local path or hub id, or a
config for tests), fp16/bf16 on GPU.

``WhisperEncoder.forward`` insists on 3000 mel frames (30 s padded). We run its own modules on the unpadded log-mel
instead (convolutions, the first N/2 position embeddings, the layers, the final norm), so this backend follows the
same padding policy as the CTranslate2 one: identical behaviour in training and inference, and no attention spent
on padding.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CheckpointError
from .base import AudioEncoder, encode_grouped


@torch.no_grad()
def encoder_layer_outputs(enc, mel: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
    """A Whisper encoder's hidden states [B, N / 2, d] after each transformer layer (before the final LayerNorm), for
    a log-mel [B, n_mels, N] of any length (no padding to 30 s); ``upto``: only the first that many layers run."""
    x = torch.nn.functional.gelu(enc.conv1(mel))
    x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[: x.shape[1]]
    outs = []
    for layer in enc.layers[:upto]:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
        outs.append(x)
    return outs


class WhisperHFEncoder(AudioEncoder):
    def __init__(self, name_or_path: str | None = None, config=None, device: str | None = None, dtype: str | None = None):
        from transformers import WhisperConfig, WhisperModel

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, None: None}[dtype]
        if self.dtype is None:
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if config is not None:  # random weights of a given architecture (tests, throughput measurements)
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            cfg = config if isinstance(config, WhisperConfig) else WhisperConfig(**config)
            torch.manual_seed(0)
            encoder = WhisperEncoder(cfg)
            name = "random-" + "-".join(str(getattr(cfg, k)) for k in ("d_model", "encoder_layers", "num_mel_bins"))
        elif name_or_path:
            try:
                model = WhisperModel.from_pretrained(name_or_path, local_files_only=True)
            except (OSError, ValueError) as e:
                from ..errors import no_download

                raise CheckpointError(f"cannot load a Whisper model from {name_or_path!r}: not on this machine or not a "
                                      f"Whisper model; {no_download(name_or_path)}") from e
            cfg, encoder = model.config, model.get_encoder()
            name = str(name_or_path).rstrip("/").split("/")[-1]
        else:
            raise CheckpointError("whisper_hf needs a model path / hub id, or a config")
        self.n_mels = int(cfg.num_mel_bins)  # large-v3 uses 128 bins
        self.encoder = encoder.to(self.device, self.dtype).eval().requires_grad_(False)
        self.dim = int(cfg.d_model)
        self.key = f"whisper_hf-{name}-{str(self.dtype).split('.')[-1]}"

    @torch.no_grad()
    def layer_outputs(self, mel: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Hidden states [B, N / 2, d] after each transformer layer (before the final LayerNorm; ``upto``: of the
        first that many)."""
        return encoder_layer_outputs(self.encoder, mel, upto)

    def int8(self) -> "WhisperHFEncoder":
        """A copy whose linear layers run in int8 (PyTorch dynamic quantization, CPU): about twice as fast on a laptop
        core, for the live stream (avitalk.encoders.streaming); the offline path keeps float32. Its features differ
        from float32's by about 10% (relative L2) and the face motion they give by almost nothing (docs/live.md)."""
        import copy
        import warnings

        def q(m):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # eager-mode quantization's deprecation notice (it still works)
                return torch.ao.quantization.quantize_dynamic(copy.deepcopy(m).float().cpu(), {torch.nn.Linear},
                                                              dtype=torch.qint8)

        out = copy.copy(self)
        out.encoder, out.device, out.dtype = q(self.encoder), torch.device("cpu"), torch.float32
        if getattr(self, "extra", None):
            out.extra = [(q(enc), ks) for enc, ks in self.extra]
        out.key = self.key + "-int8"
        return out

    def forward_unpadded(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder.layer_norm(self.layer_outputs(mel)[-1])

    def _encode_mel(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            return self.forward_unpadded(torch.as_tensor(x, device=self.device, dtype=self.dtype)).float().cpu().numpy()

        return encode_grouped(mels, run)
