"""configs/base.yaml and configs/paper.yaml, built with tiny random models of the same architectures (nothing is
downloaded): a training step of both stages and a synthesis end to end through the pipeline."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from .conftest import TINY_WHISPER

ROOT = Path(__file__).resolve().parents[1]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tiny_llm(arch: str, out: Path, corpus: list[str]) -> Path:
    """A random causal LM of the named architecture, saved like a hub checkpoint (with a chat template)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from avitalk.stage1_instruct.lm_pretrain import train_tokenizer

    tok = train_tokenizer(corpus, 300)
    tok.chat_template = CHAT
    kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(Qwen2Config(**kw)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**kw))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def shrink(cfg, tmp: Path, corpus: list[str]):
    """The same config with tiny random backbones of the architectures it names, and a few training steps."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    assert str(cfg.audio_encoder.spec).startswith("whisper_hf:openai/whisper-")
    cfg.audio_encoder = {"spec": "whisper_hf", "kwargs": {"config": TINY_WHISPER, "device": "cpu"}}
    te = str(cfg.stage2.text_encoder)
    kind = "random-clip" if te.startswith("clip:") else "random-bert"
    assert te == "minilm" or te.startswith("clip:openai/clip-vit-large-patch14")
    cfg.stage2.text_encoder = {"spec": kind, "config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                       "num_attention_heads": 2, "intermediate_size": 64}}
    s2 = cfg.stage2
    s2.style_encoder.update(d_model=32, layers=1, heads=2)
    s2.decoder.update(d_model=32, layers=1, heads=2, ff=64, window=16, overlap=4)
    s2.prior.update(d_model=32, layers=1, heads=2, timesteps=20)
    s2.sampling.steps = 3
    s2.train.lipsync.update(steps=2, batch_size=2, crop_frames=16, face_vertices=50, warmup=1)
    s2.train.prior.update(steps=2, batch_size=4, warmup=1)
    s2.train.checkpoint_every = 1
    llm = str(cfg.stage1.llm)
    arch = "qwen2" if "qwen2" in llm.lower() else "llama"
    assert arch == "qwen2" or "llama" in llm.lower()
    cfg.stage1.llm = str(_tiny_llm(arch, tmp / f"tiny-{arch}", corpus))
    cfg.stage1.qformer.update(d_model=32, layers=1, heads=2)
    cfg.stage1.train.update(steps=2, batch_size=2, qformer_warmup_steps=2)
    return cfg, arch


@pytest.mark.slow
@pytest.mark.parametrize("name", ["base", "paper"])
def test_real_backbone_configs_train_and_synthesize(name, tmp_path):
    from avitalk.data.synthtalk import generate
    from avitalk.data.manifest import read_manifest
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.stage1_instruct.instructor import Instructor, load_prompts
    from avitalk.stage1_instruct.train import train_stage1
    from avitalk.stage2_synthesis.train import train_stage2

    data = generate(tmp_path / "d", 8, seed=2, workers=1, progress=False).parent
    corpus = [t for c in read_manifest(data) for t in c.instructions] + load_prompts()
    cfg, arch = shrink(OmegaConf.load(ROOT / "configs" / f"{name}.yaml"), tmp_path, corpus)
    assert cfg.stage1.chat_template and cfg.stage1.prosody
    r2 = train_stage2(cfg, data, tmp_path / "s2", progress=False)
    r1 = train_stage1(cfg, data, tmp_path / "s1", progress=False)
    assert all(np.isfinite(h["loss"]) for h in r1["history"]["adapter"])
    assert r2["timings"]
    model = r1["model"]
    assert type(model.llm.get_base_model()).__name__.lower().startswith(arch)
    from avitalk.stage1_instruct.prefix import prompt_ids

    ins = Instructor.from_model(model, cfg)
    ids = prompt_ids(ins.lm.tokenizer, ins.prompt, ins.chat_template)
    assert ins.chat_template and "<|assistant|>" in model.tokenizer.decode(ids)  # the chat template is applied
    pipe = AVITalkingPipeline.from_stages(tmp_path / "s1", tmp_path / "s2")
    pipe.save_pretrained(tmp_path / "pipe")
    pipe = AVITalkingPipeline.from_pretrained(tmp_path / "pipe")
    clip = read_manifest(data)[0]
    out = pipe(data / clip.audio, seed=0)
    assert out.instruction.text and len(out.sequences) == 1
    seq = out.sequences[0]
    assert seq.expression.shape[1] == 50 and np.isfinite(seq.expression).all()
    edited = pipe(data / clip.audio, "A terrified woman speaks with brow strongly raised.", seed=0)
    assert edited.instruction.emotion == "fear"
    assert not np.allclose(edited.sequences[0].expression, seq.expression)


def test_configs_are_checked_against_the_schema(tmp_path, cli):
    from avitalk.config import ConfigError, load_config

    for name in ("tiny", "base", "paper"):  # the shipped configs fit, and every default is filled in
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.stage2.sampling.sampler in ("ddim", "dpmpp2m") and cfg.stage1.train.checkpoint_every > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage2:\n  train:\n    lipsync: {stpes: 3}\n")
    with pytest.raises(ConfigError, match="unknown key 'stage2.train.lipsync.stpes'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown key 'stage2.decoder.layres'"):
        load_config(ROOT / "configs" / "tiny.yaml", ["stage2.decoder.layres=3"])
    with pytest.raises(ConfigError, match="stage2.decoder.layers"):
        load_config(ROOT / "configs" / "tiny.yaml", ["stage2.decoder.layers=abc"])
    with pytest.raises(ConfigError, match="sampler: 'euler' is not one of ddim, dpmpp2m"):
        load_config(ROOT / "configs" / "tiny.yaml", ["stage2.sampling.sampler=euler"])
    assert load_config(ROOT / "configs" / "tiny.yaml", ["stage2.sampling.sampler=dpmpp2m"]).stage2.sampling.sampler == "dpmpp2m"
    bad.write_text("stage2: [unclosed\n")
    with pytest.raises(ConfigError, match="not a readable YAML"):
        load_config(bad)
    # through the CLI: one line, exit 2, nothing trained
    code, _, err = cli("train", "stage2", "--config", ROOT / "configs" / "tiny.yaml", "--data", tmp_path, "--out",
                       tmp_path / "ck", "--set", "stage2.train.lipsync.stpes=3")
    assert code == 2 and "unknown key 'stage2.train.lipsync.stpes'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ck").exists()


def test_configs_carry_settings_not_results():
    """Measurements live in docs/ and the model cards; a config's comments say what a setting does, not what it
    scored (no percentages)."""
    import re

    for p in sorted((ROOT / "configs").glob("*.yaml")):
        comments = [line.split("#", 1)[1] for line in p.read_text().splitlines() if "#" in line]
        assert not [c for c in comments if re.search(r"\d\s*%", c)], p.name


# parameters named like a config key that are not that setting: per-call options and an encoder spec's own option
NOT_SETTINGS = {"seed", "batch_size", "name"}
NOT_SETTINGS_AT = {("avitalk/encoders/whisper_layers.py", "prosody"): "the encoder's option (its spec's kwargs)"}


def test_every_default_lives_in_config_py():
    """avitalk/config.py holds every default: no function of the library gives a parameter named after a config
    setting (``d_model``, ``window``, ``guidance_scale``, ``r``, ``warmup``, ...) a value of its own, so a module
    built from a config can only get the config's value. Literal model widths (384) are not defaults either."""
    import ast
    import dataclasses
    import re

    from avitalk import config as C

    settings = set()

    def walk(dc):
        for f in dataclasses.fields(dc):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                walk(type(sub))
            else:
                settings.add(f.name)

    walk(C.AvitalkConfig)
    assert {"d_model", "window", "overlap", "guidance_scale", "r", "lora_alpha", "warmup", "snr_gamma"} <= settings
    bad = []
    for folder in ("avitalk", "stage1_instruct", "stage2_synthesis"):
        for p in (ROOT / folder).rglob("*.py"):
            rel = p.relative_to(ROOT).as_posix()
            if rel == "avitalk/config.py":
                continue
            text = p.read_text()
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                a = node.args
                pos = a.posonlyargs + a.args
                pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
                for arg, d in pairs:
                    if (arg.arg in settings and arg.arg not in NOT_SETTINGS and (rel, arg.arg) not in NOT_SETTINGS_AT
                            and isinstance(d, ast.Constant) and d.value is not None):
                        bad.append(f"{rel}:{node.lineno}: {node.name}({arg.arg}={d.value!r})")
            if folder != "avitalk" or rel in ("avitalk/training.py",):
                for n, line in enumerate(text.splitlines(), 1):
                    if re.search(r"\b384\b", line.split("#", 1)[0]):
                        bad.append(f"{rel}:{n}: a literal model width: {line.strip()}")
    assert not bad, "\n".join(bad)
