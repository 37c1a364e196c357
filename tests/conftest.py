"""Shared fixtures and helpers: synthetic audio (never ../shared), the stand-in head, a tiny synthetic FLAME pickle,
tiny configs of both stages and a tiny untrained pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

SR = 16_000


@pytest.fixture(scope="session", autouse=True)
def own_temp_folder():
    """Every temporary file the tests (and what they start: Gradio, Chromium, torch's launcher, subprocesses) make goes
    into one folder, removed when the session ends: nothing is left in the system's temporary folder."""
    import os
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="avitalk-tests-")
    keys = ("TMPDIR", "GRADIO_TEMP_DIR")
    before = {k: os.environ.get(k) for k in keys}
    os.environ["TMPDIR"], os.environ["GRADIO_TEMP_DIR"] = d, os.path.join(d, "gradio")
    tempfile.tempdir = d
    yield Path(d)
    tempfile.tempdir = None
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(d, ignore_errors=True)


def tone(seconds: float = 1.0, sr: int = SR, freq: float = 220.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], 1)
    return x


def write_m4a(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    """AAC in an mp4 container (what MEAD ships), written with PyAV."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "mono"
        for i in range(0, len(x), 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i : i + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts = sr, i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture
def wav_file(tmp_path: Path):
    """Factory: write a tone to a file in any soundfile format and return its path."""
    import soundfile as sf

    def make(name: str = "speech.wav", seconds: float = 1.0, sr: int = SR, channels: int = 1, **kw) -> Path:
        p = tmp_path / name
        fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}[p.suffix]
        sub = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III", "WAV": "PCM_16", "FLAC": "PCM_16"}[fmt]
        sf.write(str(p), tone(seconds, sr, channels=channels, **kw), sr, format=fmt, subtype=sub)
        return p

    return make


@pytest.fixture(scope="session")
def standin():
    from avitalk.flame import FlameModel

    return FlameModel.standin()


def _fake_flame_dict(V: int = 120, K: int = 400, seed: int = 0) -> dict:
    """A small random model with the keys and layout of an official FLAME pickle."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.05, (V, 3))
    faces = np.stack([np.arange(V - 2), np.arange(1, V - 1), np.arange(2, V)], 1).astype(np.uint32)
    weights = rng.random((V, 5)) ** 4
    weights /= weights.sum(1, keepdims=True)
    jr = np.zeros((5, V))
    for j in range(5):
        idx = rng.choice(V, 6, replace=False)
        jr[j, idx] = 1 / 6
    kt = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": v,
        "f": faces,
        "shapedirs": rng.normal(0, 1e-3, (V, 3, K)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": sp.csc_matrix(jr),
        "weights": weights,
        "kintree_table": kt,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@pytest.fixture
def fake_flame_dict():
    return _fake_flame_dict


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the avitalk CLI in-process: returns (exit_code, stdout, stderr)."""
    from avitalk.top.cli import main

    def run(*args: str, capsys=None):
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()

    return run


# ----------------------------------------------------------------------------- tiny models (shared by several test files)
TINY_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, max_source_positions=1500)


def tiny_stage2_cfg(**over):
    """A stage-2 config of tiny random networks (random Whisper and BERT shapes): builds and trains in seconds."""
    cfg = OmegaConf.create({
        "name": "test", "seed": 0, "flame_model": "standin",
        "audio_encoder": {"spec": "whisper_hf", "kwargs": {"config": TINY_WHISPER, "device": "cpu"}},
        "stage2": {
            "text_encoder": {"spec": "random-bert", "config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                               "num_attention_heads": 2, "intermediate_size": 64}},
            "style_dim": 16,
            "style_encoder": {"d_model": 32, "layers": 1, "heads": 2, "dropout": 0.0},
            "decoder": {"d_model": 32, "layers": 1, "heads": 2, "ff": 64, "dropout": 0.0, "window": 16, "overlap": 4},
            "prior": {"d_model": 32, "layers": 1, "heads": 2, "n_tokens": 2, "timesteps": 20, "cond_drop": 0.2},
            "sampling": {"steps": 5, "guidance_scale": 2.0},
            "train": {
                "lipsync": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup": 1, "crop_frames": 16, "coef_weight": 1.0,
                            "vertex_weight": 1.0, "lip_weight": 3.0, "velocity_weight": 0.5, "face_vertices": 50},
                "prior": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup": 1, "contrastive_weight": 0.1},
                "checkpoint_every": 2, "mixed_precision": "bf16",
            },
        },
    })
    return OmegaConf.merge(cfg, OmegaConf.create(over))


def wake_modulation(decoder):
    """AdaLN modulation starts at zero (identity), so an untrained decoder ignores z; give it weights as training would."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for blk in decoder.blocks:
            blk.mod.weight.copy_(torch.randn(blk.mod.weight.shape, generator=g) * 0.2)


def tiny_stage1_cfg():
    """A stage-1 config of tiny networks (random Whisper shape, the real MiniLM text encoder)."""
    return OmegaConf.create({
        "seed": 0,
        "audio_encoder": {"spec": "whisper_hf", "kwargs": {"config": TINY_WHISPER, "device": "cpu"}},
        "stage2": {"text_encoder": "minilm"},
        "stage1": {
            "llm": "tiny", "chat_template": False,
            "tiny_lm": {"vocab_size": 300, "hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "ff": 64,
                        "max_positions": 128, "steps": 5, "batch_size": 4, "lr": 3e-3},
            "qformer": {"d_model": 32, "num_queries": 4, "layers": 1, "heads": 2, "dropout": 0.0},
            "lora": {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "train": {"steps": 5, "batch_size": 4, "lr": 1e-3, "contrastive_weight": 0.1},
        },
    })


STAGE1 = {
    "llm": "tiny", "chat_template": False, "prosody": True,
    "qformer": {"d_model": 32, "num_queries": 4, "layers": 1, "heads": 2, "dropout": 0.0, "conv_frontend": True},
    "lora": {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "train": {"steps": 2, "batch_size": 2, "lr": 1e-3},
}


def build_tiny_pipeline():
    """Both stages with tiny random networks (no training) joined into an AVITalkingPipeline."""
    import torch

    from avitalk.vocab import EMOTIONS, load_vocabulary
    from avitalk.stage1_instruct.lm_pretrain import tiny_llama, train_tokenizer
    from avitalk.stage1_instruct.model import build_model, load_prompts
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    cfg = tiny_stage2_cfg(stage1=STAGE1)
    cfg.audio_dim = 32
    synth = Synthesizer.build(cfg)
    wake_modulation(synth.decoder)
    vocab = load_vocabulary()
    rng = np.random.default_rng(0)
    corpus = [vocab.write(e, 1 + k % 3, [], rng=rng) for k in range(6) for e in EMOTIONS] + load_prompts()
    tok = train_tokenizer(corpus, 300)
    torch.manual_seed(0)
    llm = tiny_llama(tok, hidden=32, layers=1, heads=2, kv_heads=1, ff=64, max_positions=128, seed=0)
    instructor = build_model(cfg, tok, llm, synth.text_encoder.dim).eval()
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.stage1_instruct.hearing import prosody_dim
    from avitalk.stage1_instruct.reader import EmotionReader

    pipe = AVITalkingPipeline(cfg, synth, instructor, source="test")
    d = 2 * (int(cfg.audio_dim) + prosody_dim(cfg))  # a random emotion reader on the utterance statistics
    g = torch.Generator().manual_seed(0)
    pipe.instructor.reader = EmotionReader(torch.zeros(d), torch.ones(d), 0.3 * torch.randn(len(EMOTIONS), d,
                                                                                            generator=g),
                                           torch.zeros(len(EMOTIONS)), temperature=1.0, threshold=0.0)
    return pipe


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated signal with a pause: deterministic and speech-shaped enough for the encoders."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * ph) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) * (t > 0.3)
    return (0.2 * voice * env + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def render_talking_standin(head, lips_part: float = 0.4):
    """40 frames of the stand-in at GRID's frame size: the jaw opens and closes twice while the lips part (AU25 up to
    ``lips_part``) and smile a little. Returns the sequence, its vertices and the frames."""
    from avitalk.flame.standin import EXPRESSION_NAMES, standin_arrays
    from avitalk.render.renderer import renderer_for_model
    from avitalk.types import FlameSequence

    T = 40
    t = np.arange(T) / T
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.12 * (1 - np.cos(4 * np.pi * t))
    M = standin_arrays()[0]["au_to_expression"]
    exp = (np.outer(0.3 * np.sin(2 * np.pi * t) ** 2, M[EXPRESSION_NAMES.index("AU12_lip_corner_pull")])
           + np.outer(lips_part * (1 - np.cos(4 * np.pi * t)) / 2, M[EXPRESSION_NAMES.index("AU25_lips_part")]))
    seq = FlameSequence(exp.astype(np.float32), jaw)
    v = head.sequence_vertices(seq)
    with renderer_for_model(head, size=(360, 288)) as r:
        frames = r.render_frames(v)
    return seq, v, frames
