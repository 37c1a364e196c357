"""AVITalkingPipeline: speech -> editable audio-visual instruction -> FLAME motion, from one checkpoint folder.

    pipe = AVITalkingPipeline.from_pretrained()          # the embedded default (trained on synthetic speech)
    out = pipe("speech.wav")                             # stage 1 writes the instruction, stage 2 the motion
    out.instruction.text                                 # edit it ...
    seqs = pipe.synthesize("speech.wav", "A happy person speaks with lip corners strongly pulled up.")

Checkpoint folder (flat; loading never unpickles)::

    config.yaml                      the whole config (audio encoder, stage 1, stage 2, FLAME model)
    style_encoder.safetensors  decoder.safetensors  prior.safetensors      stage 2
    qformer.safetensors  lm/  tokenizer/  adapter/ (peft LoRA)            stage 1 (optional: stage-2 only works too)
    README.md (model card)  metrics.json
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import AudioError, CheckpointError
from avitalk.io import atomic_dir, atomic_write_json, atomic_write_text
from avitalk.types import SAMPLE_RATE, Audio, FlameSequence, Instruction
from avitalk.vocab import as_instruction

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"  # package data of avitalk
STAGE2_FILES = ("style_encoder.safetensors", "decoder.safetensors", "prior.safetensors")
STAGE1_PARTS = ("qformer.safetensors", "lm", "tokenizer", "adapter")


@dataclass
class PipelineOutput:
    instruction: Instruction
    sequences: list[FlameSequence]
    instruction_source: str  # "stage1" or "given"
    timings: dict[str, float] = field(default_factory=dict)
    listened_s: float | None = None  # how much of the speech stage 1 read
    heard: dict[str, float] | None = None  # stage 1's emotion reader: {emotion: probability}, most likely first
    heard_threshold: float | None = None  # the reader's threshold: an emotion under it is not named


def describe_heard(heard: dict[str, float] | None, threshold: float | None = None, top: int = 3) -> str:
    """``heard`` in words: "angry 52%, happy 45%, fear 2% (under 60%: not named, the instruction says neutral)".
    ``threshold``: the emotion reader's (below it, the instruction names no emotion); None without a reader."""
    if not heard:
        return "no emotion reader in this checkpoint"
    items = list(heard.items())[:top]
    text = ", ".join(f"{e} {p:.0%}" for e, p in items)
    if threshold is None:
        return text + " (uncalibrated: no emotion reader in this checkpoint)"
    if items[0][0] != "neutral" and items[0][1] < threshold:
        return text + f" (under {threshold:.0%}: not named, the instruction says neutral)"
    return text


def _as_audio(audio: Audio | str | os.PathLike) -> Audio:
    if isinstance(audio, Audio):
        return audio
    if isinstance(audio, (str, os.PathLike)):
        from avitalk import audio as audio_io

        return audio_io.load(audio)
    raise AudioError(f"expected an Audio or a path to a speech file, got {type(audio).__name__}")


class AVITalkingPipeline:
    """Both stages behind one object. ``instructor`` (stage 1) may be None: then an instruction must be given."""

    def __init__(self, cfg: DictConfig, synthesizer, instructor=None, audio_encoder=None, source: str | None = None):
        from avitalk.config import resolve_config

        self.cfg = resolve_config(cfg, source or "pipeline config")
        self.synthesizer = synthesizer
        if instructor is not None and not hasattr(instructor, "instruct"):  # a (training) InstructionModel
            from avitalk.stage1_instruct.instructor import Instructor

            instructor = Instructor.from_model(instructor, cfg)
        self.instructor = instructor
        self._audio_encoder = audio_encoder
        self.source = source

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, stage1: bool = True) -> "AVITalkingPipeline":
        """Load a pipeline folder (default: the embedded default checkpoint). ``stage1=False`` skips the LLM."""
        from avitalk.stage2_synthesis.synthesizer import Synthesizer

        d = Path(path) if path is not None else DEFAULT_CHECKPOINT
        if not d.is_dir():
            hint = " (build it with `make demo-checkpoint`)" if path is None else ""
            raise CheckpointError(f"{d}: no such checkpoint folder{hint}")
        if not (d / "config.yaml").is_file():
            raise CheckpointError(f"{d}: missing config.yaml (not an avitalk pipeline checkpoint)")
        try:
            cfg = OmegaConf.load(d / "config.yaml")
        except Exception as e:  # noqa: BLE001 - yaml errors of any kind
            raise CheckpointError(f"{d / 'config.yaml'}: unreadable ({e})") from e
        for need in ("audio_encoder", "stage2"):
            if need not in cfg:
                raise CheckpointError(f"{d / 'config.yaml'}: no {need} section")
        from avitalk.config import resolve_config

        cfg = resolve_config(cfg, str(d / "config.yaml"))  # once, shared by both stages
        synth = Synthesizer.load(d, cfg=cfg)
        instructor = None
        if stage1 and any((d / p).exists() for p in STAGE1_PARTS):
            from avitalk.stage1_instruct.instructor import Instructor

            instructor = Instructor.load(d, cfg=cfg)
        return cls(cfg, synth, instructor, source=str(d))

    @classmethod
    def from_stages(cls, stage1_dir: str | os.PathLike | None, stage2_dir: str | os.PathLike) -> "AVITalkingPipeline":
        """Join separately trained stage folders (``avitalk train stage1/stage2`` outputs) into one pipeline."""
        from avitalk.stage2_synthesis.synthesizer import Synthesizer

        synth = Synthesizer.load(stage2_dir)
        cfg = OmegaConf.create(OmegaConf.to_container(synth.cfg))
        instructor = None
        if stage1_dir is not None:
            from avitalk.stage1_instruct.instructor import Instructor

            instructor = Instructor.load(stage1_dir)
            c1 = instructor.cfg
            plain = lambda v: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v  # noqa: E731
            if plain(c1.audio_encoder) != plain(cfg.audio_encoder):
                raise CheckpointError(f"{stage1_dir}: stage 1 listens with audio encoder {c1.audio_encoder}, "
                                      f"stage 2 with {cfg.audio_encoder}; train both on the same encoder")
            cfg.stage1 = c1.stage1
        return cls(cfg, synth, instructor, source=f"{stage1_dir} + {stage2_dir}")

    def save_pretrained(self, directory: str | os.PathLike, dtype: str = "float16", model_card: str | None = None,
                        metrics: dict[str, Any] | None = None) -> Path:
        """Write the pipeline folder atomically; ``dtype='float16'`` halves every floating weight (loaded back as
        float32)."""
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
        d = Path(directory)
        with atomic_dir(d) as tmp:
            self.synthesizer.save(tmp)
            (tmp / "stage2.yaml").unlink()
            if self.instructor is not None:
                self.instructor.save(tmp)
            cfg = OmegaConf.create(OmegaConf.to_container(self.cfg))
            cfg.audio_dim = int(self.audio_encoder_dim)
            cfg.text_dim = int(self.synthesizer.text_encoder.dim)
            atomic_write_text(tmp / "config.yaml", OmegaConf.to_yaml(cfg))
            if metrics is not None:
                atomic_write_json(tmp / "metrics.json", metrics)
            atomic_write_text(tmp / "README.md", model_card or default_model_card(cfg, metrics))
            if dtype == "float16":
                for f in sorted(tmp.rglob("*.safetensors")):
                    _halve(f)
        return d

    def warm_up(self) -> "AVITalkingPipeline":
        """Load the lazily loaded frozen encoders now (so per-stage timings measure work, not loading)."""
        a = Audio(np.zeros(SAMPLE_RATE, np.float32) + 1e-3 * np.sin(np.arange(SAMPLE_RATE, dtype=np.float32)))
        feats = self.audio_encoder.encode(a)
        self.synthesizer.text_encoder.encode(["A person speaks."])
        if self.instructor is not None:  # and stage 1 (first calls of its ops, the vocabulary that parses its text)
            self.instructor.instruct(a, features=feats, encoder=self.audio_encoder)
        # first calls pay one-time costs (lazy imports, kernel selection): spend them here, not in the stage timings
        self.synthesizer.synthesize(np.zeros((50, self.audio_encoder_dim), np.float32), "A person speaks.", seed=0, steps=2)
        return self

    def to(self, device, lm_dtype=None) -> "AVITalkingPipeline":
        """Run the trained networks (stage 2, and stage 1's Q-Former, projection and LLM) on ``device``; the frozen
        audio and text encoders keep their own runtimes and hand over numpy arrays. ``lm_dtype`` (e.g.
        ``torch.bfloat16``) casts stage 1's LLM: what a 7B LLM wants on a GPU."""
        self.synthesizer.to(device)
        if self.instructor is not None:
            self.instructor.to(device, lm_dtype)
        return self

    @property
    def device(self):
        return self.synthesizer.device

    # ------------------------------------------------------------------ parts
    @property
    def audio_encoder(self):
        if self._audio_encoder is None:
            self._audio_encoder = self.synthesizer.audio_encoder
        return self._audio_encoder

    @property
    def audio_encoder_dim(self) -> int:
        return int(self.synthesizer.decoder.audio_in[0].normalized_shape[0]) + self.synthesizer.decoder.prosody_dim

    def encode(self, audio: Audio | str | os.PathLike) -> np.ndarray:
        """Frozen encoder features [round(duration * 50), D] (computed once, shared by both stages)."""
        return self.audio_encoder.encode(_as_audio(audio))

    # ------------------------------------------------------------------ stage 1
    def instructions(self, audio: Audio | str | os.PathLike, num_samples: int = 1, seed: int = 0,
                     features: np.ndarray | None = None) -> list[Instruction]:
        """``num_samples`` instructions (greedy for one, nucleus sampling for several)."""
        if self.instructor is None:
            raise CheckpointError(f"{self.source}: this checkpoint has no stage 1; give the instruction yourself")
        a = _as_audio(audio)
        return self.instructor.instruct(a, features if features is not None else self.encode(a), num_samples, seed,
                                        encoder=self.audio_encoder)

    def instruct(self, audio: Audio | str | os.PathLike, seed: int = 0,
                 features: np.ndarray | None = None) -> Instruction:
        return self.instructions(audio, 1, seed, features)[0]

    def heard(self, audio: Audio | str | os.PathLike, features: np.ndarray | None = None) -> dict[str, float] | None:
        """Stage 1's emotion reader on this speech: ``{emotion: calibrated probability}``, most likely first (None
        without a reader or head); see :meth:`Instructor.heard <stage1_instruct.instructor.Instructor.heard>`."""
        if self.instructor is None:
            raise CheckpointError(f"{self.source}: this checkpoint has no stage 1; give the instruction yourself")
        a = _as_audio(audio)
        return self.instructor.heard(a, features if features is not None else self.encode(a), self.audio_encoder)

    def _features_of(self, auds: list[Audio], features: Sequence[np.ndarray | None] | None) -> list[np.ndarray]:
        """Each clip's encoder features: the given ones, the rest encoded here."""
        feats = list(features) if features is not None else [None] * len(auds)
        if len(feats) != len(auds):
            raise ValueError(f"{len(auds)} clips but {len(feats)} feature arrays")
        return [f if f is not None else self.encode(a) for a, f in zip(auds, feats)]

    def instruct_many(self, audios: Sequence[Audio | str | os.PathLike],
                      features: Sequence[np.ndarray | None] | None = None, batch_size: int = 32) -> list[Instruction]:
        """One greedy instruction per clip, batched (evaluation over many clips): equal to ``instruct`` clip by clip."""
        if self.instructor is None:
            raise CheckpointError(f"{self.source}: this checkpoint has no stage 1; give the instruction yourself")
        auds = [_as_audio(a) for a in audios]
        return self.instructor.instruct_many(auds, self._features_of(auds, features), batch_size, self.audio_encoder)

    # ------------------------------------------------------------------ stage 2
    def synthesize(self, audio: Audio | str | os.PathLike, instruction: Instruction | str, num_samples: int = 1,
                   seed: int | None = None, guidance_scale: float | None = None, steps: int | None = None,
                   features: np.ndarray | None = None) -> list[FlameSequence]:
        ins = as_instruction(instruction)
        a = _as_audio(audio)
        if features is None:
            features = self.encode(a)
        return self.synthesizer.synthesize(features, ins, num_samples=num_samples, seed=seed,
                                           guidance_scale=guidance_scale, steps=steps, num_frames=a.num_frames())

    def synthesize_many(self, audios: Sequence[Audio | str | os.PathLike], instructions: Sequence[Instruction | str],
                        seeds: Sequence[int | None] | None = None, num_samples: int = 1,
                        guidance_scale: float | None = None, steps: int | None = None,
                        features: Sequence[np.ndarray | None] | None = None,
                        batch_size: int = 64) -> list[list[FlameSequence]]:
        """Motion for many clips at once (evaluation): equal to ``synthesize(audios[i], instructions[i],
        seed=seeds[i])`` clip by clip, with stage 2's prior and decoder batched over clips."""
        auds = [_as_audio(a) for a in audios]
        if len(instructions) != len(auds):
            raise ValueError(f"{len(auds)} clips but {len(instructions)} instructions")
        return self.synthesizer.synthesize_many(self._features_of(auds, features), [as_instruction(i) for i in instructions],
                                                [a.num_frames() for a in auds], seeds, num_samples, guidance_scale,
                                                steps, batch_size=batch_size)

    # ------------------------------------------------------------------ both
    def __call__(self, audio: Audio | str | os.PathLike, instruction: Instruction | str | None = None,
                 num_samples: int = 1, seed: int | None = 0, guidance_scale: float | None = None,
                 steps: int | None = None) -> PipelineOutput:
        """Speech (+ optionally your instruction, which replaces stage 1) -> instruction and motion sample(s)."""
        timings: dict[str, float] = {}
        ins = None if instruction is None else as_instruction(instruction)  # check before the slow parts
        a = _as_audio(audio)
        if a.num_frames() < 1:
            raise AudioError(f"{a.source or 'audio'}: shorter than one motion frame (40 ms)")
        t = time.perf_counter()
        feats = self.encode(a)
        timings["audio_encoder_s"] = time.perf_counter() - t
        listened = heard = None
        if ins is None:
            t = time.perf_counter()
            ins = self.instruct(a, seed=seed or 0, features=feats)
            heard = self.instructor.heard(a, feats, self.audio_encoder)
            timings["stage1_s"] = time.perf_counter() - t
            from avitalk.stage1_instruct.instructor import MAX_LISTEN_S

            listened = min(a.duration, MAX_LISTEN_S)
        t = time.perf_counter()
        seqs = self.synthesize(a, ins, num_samples, seed, guidance_scale, steps, features=feats)
        timings["stage2_s"] = time.perf_counter() - t
        return PipelineOutput(ins, seqs, "given" if instruction is not None else "stage1", timings, listened, heard,
                              self.heard_threshold if heard is not None else None)

    @property
    def heard_threshold(self) -> float | None:
        """The emotion reader's threshold (an emotion heard with less is not named); None without stage 1 or reader."""
        r = getattr(self.instructor, "reader", None)
        return None if r is None else r.threshold

    def describe(self) -> dict[str, Any]:
        out = {"stage2": self.synthesizer.describe(), "audio_encoder": str(self.cfg.audio_encoder)}
        if self.instructor is not None:
            out["stage1"] = self.instructor.describe()
        return out


def _halve(path: Path) -> None:
    """Rewrite a safetensors file with its float32 tensors as float16 (metadata kept), atomically."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from avitalk.io import atomic_path

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: (v.half() if v.dtype == torch.float32 else v).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def default_model_card(cfg: DictConfig, metrics: dict[str, Any] | None) -> str:
    lines = [
        f"# avitalk pipeline checkpoint ({cfg.get('name', 'custom')})",
        "",
        f"- audio encoder: `{cfg.audio_encoder}` (frozen); text encoder: `{cfg.stage2.text_encoder}` (frozen)",
        f"- stage 1 LLM: `{cfg.get('stage1', {}).get('llm', 'none')}` + LoRA; FLAME model: `{cfg.get('flame_model', 'standin')}`",
        "- weights: safetensors; LoRA adapter in peft format; load with `AVITalkingPipeline.from_pretrained(DIR)`",
    ]
    if metrics:
        import json

        lines += ["", "## Metrics", "", "```json", json.dumps(metrics, indent=2), "```"]
    return "\n".join(lines) + "\n"


__all__ = ["AVITalkingPipeline", "PipelineOutput", "DEFAULT_CHECKPOINT"]

