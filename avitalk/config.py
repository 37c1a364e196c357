"""Typed configs: one structured schema (dataclasses read by OmegaConf) for everything a config file may say, with
every default here and nowhere else.

``load_config("configs/tiny.yaml", ["stage2.train.lipsync.steps=200"])`` merges the file and the ``--set`` overrides
into the schema: a misspelt or unknown key, or a value of the wrong type, is a :class:`ConfigError` naming the key
and the file. The result is a DictConfig with every key present, so code reads ``cfg.stage2.train.lipsync.steps``
and never guesses a default. Training copies the config it is given (it adds the encoders' dimensions to its own
copy) and writes the resolved config into the checkpoint once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import AvitalkError


class ConfigError(AvitalkError):
    """A config file or override that does not fit the schema (unknown key, wrong type, unreadable YAML)."""


# ------------------------------------------------------------------------------------------------------- stage 2
@dataclass
class StyleEncoderConfig:
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1


@dataclass
class DecoderConfig:
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    window: int = 64  # frames per decoder window (overlapping windows cover any length)
    overlap: int = 16


@dataclass
class PriorConfig:
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    n_tokens: int = 4
    timesteps: int = 100
    cond_drop: float = 0.2
    dropout: float = 0.0
    snr_gamma: float = 5.0  # min-SNR-gamma weighting of the diffusion loss


@dataclass
class SamplingConfig:
    steps: int = 25
    guidance_scale: float = 1.5
    sampler: str = "ddim"  # ddim | dpmpp2m (stage2_synthesis/samplers.py)
    lip_seal: bool = False  # lips close where the decoder's reading with a reference style closes them (lip_seal.py)


@dataclass
class LipsyncTrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1.0e-3
    warmup: int = 100
    crop_frames: int = 64
    coef_weight: float = 1.0
    vertex_weight: float = 1.0
    lip_weight: float = 3.0
    velocity_weight: float = 0.5
    face_vertices: int = 400
    vertex_frame_fraction: float = 0.25
    augment_p: float = 0.0  # chance a batch row reads the clip through an augmented copy
    pause_p: float = 0.0  # chance a batch row reads one of the clip's pause copies (stage2.train.pause_copies)
    gap_weight: float = 0.0  # loss on the lip gap itself (mm)
    closed_weight: float = 0.0  # frames where the data's lips touch count this much more in it
    # with more corpora of motion (``train_stage2(motion_data=...)``, e.g. tracked real faces): the share of a batch's
    # rows drawn from them (None: in proportion to their clips)
    motion_data_share: Optional[float] = None
    # whose motion gives those clips their style: "own" (another clip of their corpus) or "first" (a clip of the
    # main corpus with the same emotion: the styles the prior will give at inference)
    motion_data_partners: str = "own"
    # what of those clips' faces the lip-sync losses read: "all" (expression coefficients and face vertices) or
    # "lips" (the lip vertices, the lip gap and the jaw pose; a tracked face's brows and eyes are then left to the
    # main corpus's styles)
    motion_data_loss: str = "all"
    # which of those clips' frames the lip-sync losses read: "all" or "speech" (frames within 0.12 s of a word of the
    # clip's word times, stage2_synthesis.clips.speech_frames; a tracked face's silences, lips often apart, are then
    # left to the main corpus's rest)
    motion_data_frames: str = "all"
    # with speech without motion (``train_stage2(event_data=...)``, e.g. plain read speech): rows of it added to every
    # lip-sync and live-decoder batch, whose loss is the lips at its aligned sounds (shut at /b p m/, open at open
    # vowels, at rest in pauses: squared hinges on the lip gap in mm, stage2_synthesis.train.event_loss and rest_loss)
    # weighted event_weight; every event_holdout_every-th speaker is held out (to measure on)
    event_rows: int = 0
    event_weight: float = 0.05
    event_holdout_every: int = 5


@dataclass
class PriorTrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 5.0e-4
    warmup: int = 100
    contrastive_weight: float = 0.1
    mapper_weight: float = 1.0  # the deterministic text -> style mapper's loss (the prior's baseline)
    partial_instructions: int = 2
    conflicting_instructions: int = 0
    conflict_probability: float = 0.0


@dataclass
class StreamTrainConfig:
    """The live decoder: a copy of the lip-sync decoder fine-tuned on the windows a live stream encodes (the last
    ``context_s`` seconds, Whisper's features at its end computed without the audio after them)."""
    steps: int = 0  # 0: no live decoder; a stream decodes with the offline one
    batch_size: int = 16
    lr: float = 3.0e-4
    warmup: int = 50
    windows: int = 4  # stream windows encoded and cached per training clip (cut from its pause copies' audio)
    context_s: float = 2.0  # the seconds of audio each live encoder call reads (avitalk live's window)


@dataclass
class Stage2TrainConfig:
    lipsync: LipsyncTrainConfig = field(default_factory=LipsyncTrainConfig)
    prior: PriorTrainConfig = field(default_factory=PriorTrainConfig)
    stream: StreamTrainConfig = field(default_factory=StreamTrainConfig)
    augment_copies: int = 0
    # copies of every training clip between 0.5-3 s of silence (the face at rest in it), encoded once and cached
    pause_copies: int = 0
    checkpoint_every: int = 400
    mixed_precision: str = "bf16"  # on GPUs only


@dataclass
class Stage2Config:
    text_encoder: Any = "minilm"  # a spec string, or {spec, config} (random weights, tests)
    style_dim: int = 128
    style_encoder: StyleEncoderConfig = field(default_factory=StyleEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: Stage2TrainConfig = field(default_factory=Stage2TrainConfig)


# ------------------------------------------------------------------------------------------------------- stage 1
@dataclass
class TinyLMConfig:
    vocab_size: int = 1024
    hidden: int = 192
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ff: int = 512
    max_positions: int = 256
    steps: int = 400
    batch_size: int = 32
    lr: float = 3.0e-3


@dataclass
class QFormerConfig:
    d_model: int = 192
    num_queries: int = 32
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    conv_frontend: bool = False
    pool: int = 1
    stats: bool = False
    # the listener: an utterance-level network (convolutions + attentive statistics pooling) whose summary is added to
    # every query and given to the LLM as one more speech token; 0 = off, else its width
    listener: int = 0
    listener_dropout: float = 0.3


@dataclass
class LoraConfig:
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class Stage1TrainConfig:
    steps: int = 800
    warmup: int = 50  # learning-rate warm-up steps of the adapter phase
    batch_size: int = 16
    lr: float = 1.0e-3
    contrastive_weight: float = 0.1
    aux_weight: float = 0.0
    keyword_weight: float = 1.0
    qformer_warmup_steps: int = 0
    qformer_warmup_batch_size: int = 32
    qformer_warmup_crop: Optional[int] = None
    qformer_warmup_lr: float = 2.0e-3
    real_fraction: float = 0.5
    augment_copies: int = 0
    augment_p: float = 0.5
    augment_p_main: Optional[float] = None  # the main corpus's (SynthTalk's) own chance; None: augment_p
    reader_c: float = 0.01  # the emotion reader's inverse L2 strength (stage1_instruct.reader)
    checkpoint_every: int = 200
    mixed_precision: str = "bf16"


@dataclass
class Stage1Config:
    llm: str = "tiny"  # or a path / hub id of a causal LM
    chat_template: bool = False
    prosody: bool = False
    # weight of the emotion reader (stage1_instruct.reader; without one, the Q-Former's emotion head) in the choice of
    # the instruction's emotion word (0: the LLM alone)
    emotion_guidance: float = 0.0
    # fit the emotion reader after training (its temperature and threshold: scripts/voice_folds.py)
    reader: bool = False
    # the emotion reader's own audio encoder (a spec like audio_encoder, one that carries prosody, e.g. whisper_layers);
    # None: it reads the features stage 1 reads
    reader_encoder: Any = None
    # stage 1 hears the speech between this much faint noise on each side (0: the clip as cut); see
    # avitalk.audio.even_margins
    listen_pad_s: float = 0.0
    tiny_lm: TinyLMConfig = field(default_factory=TinyLMConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: Stage1TrainConfig = field(default_factory=Stage1TrainConfig)


@dataclass
class AvitalkConfig:
    name: str = "custom"
    seed: int = 0
    audio_encoder: Any = "whisper_ct2"  # a spec string, or {spec, kwargs}
    flame_model: str = "standin"
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    audio_dim: Optional[int] = None  # written by training (the encoder's feature size), read at load time
    text_dim: Optional[int] = None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None):
    """The config file merged into the schema, then the ``key=value`` overrides; refused with a ConfigError that
    names the offending key."""
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file() and p.suffix == "" and len(p.parts) == 1 and (configs_dir() / f"{p}.yaml").is_file():
        p = configs_dir() / f"{p}.yaml"  # a packaged config by name: tiny, base, paper
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file (or one of the packaged configs: {', '.join(packaged_configs())})")
    try:
        user = OmegaConf.load(p)
    except Exception as e:  # noqa: BLE001 - YAML errors of any kind
        raise ConfigError(f"{p}: not a readable YAML config ({' '.join(str(e).split())})") from e
    return merge_config(user, overrides, source=str(p))


def configs_dir() -> Path:
    """The packaged configs (``avitalk.configs``: the repository's ``configs/``)."""
    import importlib.util

    spec = importlib.util.find_spec("avitalk.configs")
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else Path("configs")


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def merge_config(user, overrides: list[str] | None = None, source: str = "config"):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(AvitalkConfig)
    try:
        cfg = OmegaConf.merge(schema, user)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_why(e)}") from e
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"--set {bad[0]!r}: write key=value (e.g. stage2.train.lipsync.steps=200)")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as e:
            raise ConfigError(f"--set: {_why(e)}") from e
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(allowed)}")
    return cfg


CHOICES = {  # string keys that take one of a few values
    "stage2.sampling.sampler": ("ddim", "dpmpp2m"),
    "stage2.train.lipsync.motion_data_partners": ("own", "first"),
    "stage2.train.lipsync.motion_data_loss": ("all", "lips"),
    "stage2.train.lipsync.motion_data_frames": ("all", "speech"),
}


def _why(e) -> str:
    from omegaconf.errors import ConfigKeyError

    key = getattr(e, "full_key", None)
    if isinstance(e, ConfigKeyError):
        return f"unknown key {key!r} (misspelt? see avitalk/config.py for the keys a config may have)"
    msg = str(e).splitlines()[0]
    return f"{key}: {msg}" if key else msg


def resolve_config(cfg, source: str = "checkpoint config"):
    """A schema-complete copy of a config read from a checkpoint (or built in code): every default filled in, so
    code reads attributes and never guesses. Keys the schema does not know (a checkpoint from another version) are
    dropped with a warning instead of refusing to load it."""
    import logging

    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is AvitalkConfig:
        return cfg  # already resolved (shared by the parts of one pipeline)
    schema = OmegaConf.structured(AvitalkConfig)
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    dropped: list[str] = []

    def keep(node: dict, ref, prefix: str) -> dict:
        out = {}
        for k, v in node.items():
            if k not in ref:
                dropped.append(prefix + str(k))
                continue
            sub = ref[k]
            out[k] = keep(v, sub, f"{prefix}{k}.") if isinstance(v, dict) and isinstance(sub, DictConfig) and \
                OmegaConf.get_type(sub) is not dict else v
        return out

    plain = keep(plain, schema, "")
    if dropped:
        logging.getLogger(__name__).warning("%s: ignoring keys this version does not know: %s", source,
                                            ", ".join(dropped[:5]))
    return merge_config(plain, source=source)
