"""Instructor: stage 1 at inference. Speech (or its encoder features) -> instruction text(s).

    ins = Instructor.load("ckpt")                 # a pipeline folder or an `avitalk train stage1` folder
    ins.instruct(audio)                           # [Instruction]; greedy for one, nucleus sampling for several
    ins.heard(audio)                              # {emotion: calibrated probability}, most likely first

It joins four parts, each in its own module: what it hears of a clip (:mod:`.hearing`), the Q-Former that turns
that into speech tokens (:mod:`.qformer`, :mod:`.prefix`), the language model that writes (:mod:`.lm`: the lean
runtime or transformers + peft) and the emotion reader whose vote chooses the emotion word (:mod:`.reader`,
:mod:`.vote`). Training lives in :mod:`.train`; its evaluation generates through :meth:`Instructor.from_model`, so
there is one generation path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from avitalk.errors import CheckpointError
from avitalk.io import atomic_path
from avitalk.types import Audio, Instruction
from avitalk.vocab import first_sentence, fix_articles

from .hearing import MAX_LISTEN_S, Hearing, prosody_dim, speech_features
from .lm import LanguageModel, LeanLM, PeftLM, load_stage1, model_heads, open_stage1
from .model import build_qformer, load_prompts
from .vote import EmotionGuide

log = logging.getLogger(__name__)


def to_instruction(text: str) -> Instruction:
    """An Instruction with emotion / intensity / actions parsed when the text follows the vocabulary."""
    from avitalk.vocab import parse_instruction

    return parse_instruction(text.strip() or "A person speaks.")


class Instructor:
    """Q-Former + projection + LM (+ LoRA), for generation. ``lm``: a :class:`~.lm.LanguageModel`; ``heads``: the
    training heads of ``qformer.safetensors`` (align, aux, logit_scale), kept so that saving loses nothing."""

    def __init__(self, cfg: DictConfig | None, qformer, lm: LanguageModel, prompt: str, chat_template: bool,
                 heads: dict[str, torch.Tensor] | None = None):
        from avitalk.config import resolve_config

        self.cfg = None if cfg is None else resolve_config(cfg, "stage-1 config")
        self.qformer = qformer.eval()
        self.lm = lm
        self.prompt = prompt
        self.chat_template = chat_template
        self._heads = heads or {}
        self.emotion_guidance: float | None = None  # overrides the config's stage1.emotion_guidance when set
        self.hearing = Hearing(self.cfg)  # what it reads of a clip
        self.emotion = EmotionGuide(self.token_ids, self._heads)  # which emotion word it writes

    @property
    def reader(self):
        """The emotion reader (:class:`.reader.EmotionReader`), when the checkpoint has one."""
        return self.emotion.reader

    @reader.setter
    def reader(self, reader) -> None:
        self.emotion.reader = reader

    @property
    def lean(self) -> bool:
        return isinstance(self.lm, LeanLM)

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def load(cls, ckpt: str | os.PathLike, cfg: DictConfig | None = None, lean: bool = True) -> "Instructor":
        """Stage 1 of a pipeline folder (``cfg`` = its config) or of an `avitalk train stage1` folder (its
        ``stage1.yaml``). Never unpickles; float16 weights are loaded as float32. ``lean``: the lean runtime when it
        runs this LM (transformers + peft otherwise)."""
        from safetensors.torch import load_file

        from avitalk.config import resolve_config
        from avitalk.lean.llama import UnsupportedModel

        d, cfg = open_stage1(ckpt, cfg)
        cfg = resolve_config(cfg, str(d))
        lm = None
        if lean:
            try:
                lm = LeanLM.load(d, bool(cfg.stage1.chat_template))
            except (UnsupportedModel, OSError, ValueError, KeyError) as e:
                log.info("stage 1 LM on transformers (%s)", e)
        if lm is None:
            return cls.from_model(load_stage1(d, cfg=cfg)[0], cfg).load_reader(d)
        state = load_file(str(d / "qformer.safetensors"))
        q = build_qformer(cfg, lm.hidden_size)
        try:
            q.load_state_dict({k[8:]: v.float() for k, v in state.items() if k.startswith("qformer.")})
        except RuntimeError as e:
            raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
        heads = {k: v for k, v in state.items() if not k.startswith("qformer.")}
        return cls(cfg, q, lm, load_prompts()[0], False, heads=heads).load_reader(d)

    def load_reader(self, d: str | os.PathLike) -> "Instructor":
        """Take the emotion reader of folder ``d`` when it has one (``reader.safetensors``)."""
        from .reader import READER_FILE, EmotionReader

        if (Path(d) / READER_FILE).is_file():
            self.reader = EmotionReader.load(Path(d) / READER_FILE)
        return self

    @classmethod
    def from_model(cls, model, cfg: DictConfig | None) -> "Instructor":
        """Share the parts of a (training) InstructionModel: generation during training and evaluation."""
        return cls(cfg, model.qformer, PeftLM(model), model.prompt, model.chat_template, heads=model_heads(model))

    def save(self, out: str | os.PathLike) -> None:
        """Write ``tokenizer/``, ``lm/`` (the frozen LM alone), ``adapter/`` (peft LoRA), ``qformer.safetensors`` and,
        with a reader, ``reader.safetensors``."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.reader is not None:
            from .reader import READER_FILE

            self.reader.save(out / READER_FILE)
        self.lm.save(out)
        state = {f"qformer.{k}": v for k, v in self.qformer.state_dict().items()}
        state.update(self._heads)
        with atomic_path(out / "qformer.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))

    def to(self, device, lm_dtype: torch.dtype | None = None) -> "Instructor":
        """Move to ``device``; ``lm_dtype`` (e.g. ``torch.bfloat16``) also casts the LLM (half the memory and about
        twice the decoding speed of float32 for a 7B model on a GPU); the Q-Former stays float32."""
        self.qformer.to(device)
        self.lm.to(device, lm_dtype)
        self._heads = {k: v.to(device) for k, v in self._heads.items()}
        self.emotion.heads = self._heads  # the emotion head votes where it runs
        return self

    def describe(self) -> dict[str, int]:
        return {**self.lm.sizes(), "qformer": sum(p.numel() for p in self.qformer.parameters())}

    @torch.no_grad()
    def heard(self, audio: Audio, features: np.ndarray | None = None, encoder=None) -> dict[str, float] | None:
        """How stage 1 hears the voice: ``{emotion: probability}``, most likely first: the emotion reader's calibrated
        probabilities (without a reader: the Q-Former emotion head's softmax, uncalibrated). None with neither. Reads
        what :meth:`instruct` reads (the first 30 s)."""
        from avitalk.vocab import EMOTIONS

        if self.reader is not None:
            p = self.reader.probs(self.hearing.utterance(audio, features, encoder))[0]
        else:
            dev = next(self.qformer.parameters()).device
            f = torch.as_tensor(self.hearing.rows(audio, features, encoder))[None].to(dev)
            logp = self.emotion.head_log_probs(self.prefix(f, torch.ones(f.shape[:2], dtype=torch.bool, device=dev))[2])
            if logp is None:
                return None
            p = logp[0].exp().cpu()
        return {EMOTIONS[i]: float(p[i]) for i in p.argsort(descending=True).tolist()}

    # ---------------------------------------------------------------- generation
    def token_ids(self, text: str) -> list[int]:
        """The LM's token ids of `` text`` (no special tokens)."""
        from .prefix import prompt_ids

        return prompt_ids(self.lm.tokenizer, text, chat_template=False)

    def prefix(self, feats: torch.Tensor, mask: torch.Tensor | None, prompts: Sequence[str] | None = None,
               use_speech: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[BOS | speech tokens | prompt] embeddings [B, P, H] (left-padded), attention mask, pooled queries."""
        from .prefix import prompt_ids, speech_prefix

        tok = self.lm.tokenizer
        pids = [prompt_ids(tok, p or self.prompt, self.chat_template) for p in (prompts or [None] * feats.shape[0])]
        return speech_prefix(self.qformer, self.lm.embeddings(), tok.bos_token_id, pids, feats, mask, use_speech)

    def _guidance(self) -> float:
        """The weight used when ``generate`` is given none: ``self.emotion_guidance`` if set, else the config's."""
        if self.emotion_guidance is not None:
            return float(self.emotion_guidance)
        return float(self.cfg.stage1.get("emotion_guidance", 0.0)) if self.cfg is not None else 0.0

    @torch.no_grad()
    def generate(self, feats: torch.Tensor, mask: torch.Tensor | None = None, num_samples: int = 1,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 0.9, num_beams: int = 1,
                 max_new_tokens: int = 64, use_speech: bool = True, seed: int | None = None,
                 emotion_guidance: float | None = None, utterance=None) -> list[list[str]]:
        """Texts [B][num_samples]; greedy by default, nucleus sampling (or beam search, transformers LMs only) on
        request; always stops (end-of-text token or ``max_new_tokens``) and is cut after the first sentence.
        ``emotion_guidance`` (default: the config's ``stage1.emotion_guidance``) weighs the emotion reader (or the
        Q-Former's emotion head) into the choice of the emotion word (:class:`.vote.EmotionVote`); 0 leaves the LLM
        alone. ``utterance``: [B, 2 D] statistics for the emotion reader (:meth:`.hearing.Hearing.utterance`)."""
        pre, pmask, pooled = self.prefix(feats, mask, None, use_speech)
        g = self._guidance() if emotion_guidance is None else float(emotion_guidance)
        vote = self.emotion.vote(pooled, g, self.lm.embeddings().num_embeddings, utterance) if use_speech else None
        if seed is not None:
            torch.manual_seed(seed)
        texts = self.lm.generate(pre, pmask, vote, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature, top_p=top_p, num_samples=num_samples, num_beams=num_beams)
        texts = [fix_articles(first_sentence(t)) for t in texts]
        return [texts[b * num_samples : (b + 1) * num_samples] for b in range(feats.shape[0])]

    def _utterance(self, audio: Audio, features, encoder) -> np.ndarray | None:
        return None if self.reader is None else self.hearing.utterance(audio, features, encoder)
    def instruct(self, audio: Audio, features: np.ndarray | None = None, num_samples: int = 1, seed: int = 0,
                 encoder=None) -> list[Instruction]:
        """``num_samples`` instructions for one Audio (greedy for one, nucleus sampling for several); reads the first
        :data:`MAX_LISTEN_S` seconds. ``features``: the audio encoder's output if already computed."""
        dev = next(self.qformer.parameters()).device
        f = torch.as_tensor(self.hearing.rows(audio, features, encoder, warn=True))[None].to(dev)
        m = torch.ones(f.shape[:2], dtype=torch.bool, device=dev)
        texts = self.generate(f, m, num_samples=num_samples, do_sample=num_samples > 1, seed=seed,
                              utterance=self._utterance(audio, features, encoder))[0]
        return [to_instruction(t) for t in texts]

    def instruct_many(self, audios: Sequence[Audio], features: Sequence[np.ndarray | None] | None = None,
                      batch_size: int = 32, encoder=None) -> list[Instruction]:
        """One greedy instruction per clip, clips batched (evaluation): the same texts as ``instruct`` clip by clip.
        Clips are sorted by length so that a batch pads little; each reads its first :data:`MAX_LISTEN_S` seconds."""
        feats = list(features) if features is not None else [None] * len(audios)
        if len(feats) != len(audios):
            raise ValueError(f"{len(audios)} clips but {len(feats)} feature arrays")
        rows = [self.hearing.rows(a, f, encoder) for a, f in zip(audios, feats)]
        utts = [self._utterance(a, f, encoder) for a, f in zip(audios, feats)]
        from avitalk.data.dataset import pad_arrays

        dev = next(self.qformer.parameters()).device
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list[Instruction | None] = [None] * len(rows)
        for b in range(0, len(order), max(1, int(batch_size))):
            idx = order[b : b + batch_size]
            f, m = pad_arrays([rows[i] for i in idx])
            utt = None if utts[idx[0]] is None else np.concatenate([utts[i] for i in idx])
            for i, texts in zip(idx, self.generate(f.to(dev), m.to(dev), utterance=utt)):
                out[i] = to_instruction(texts[0])
        return out  # type: ignore[return-value]


__all__ = ["Instructor", "MAX_LISTEN_S", "load_prompts", "prosody_dim", "speech_features", "to_instruction"]
