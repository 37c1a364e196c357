"""Instructor: stage 1 at inference, its one home. Speech (or its encoder features) -> instruction text(s).

    ins = Instructor.load("ckpt")                 # a pipeline folder or an `avitalk train stage1` folder
    ins.instruct(audio)                           # [Instruction]; greedy for one, nucleus sampling for several

A checkpoint's Llama-family LM with its LoRA adapter runs on :class:`avitalk.lean.llama.LlamaLite` (plain torch, no
transformers / peft import, same greedy output: tested); any other LM falls back to transformers + peft. Training
lives in :mod:`.train` (which builds an :class:`~.model.InstructionModel`); its evaluation generates through
:meth:`Instructor.from_model`, so there is one generation path.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.encoders.base import FEATURE_RATE
from avitalk.errors import CheckpointError
from avitalk.io import atomic_dir, atomic_path, atomic_write_text
from avitalk.types import Audio, Instruction
from avitalk.vocab import fix_articles

log = logging.getLogger(__name__)

MAX_LISTEN_S = 30.0  # stage 1 reads at most the first 30 s (one Whisper window)
PROSODY_DIM = 4
LM_PARTS = ("tokenizer", "lm", "adapter", "qformer.safetensors")


def load_prompts() -> list[str]:
    import yaml

    from avitalk.vocab import prompts_dir

    return list(yaml.safe_load((prompts_dir() / "stage1.yaml").read_text())["prompts"])


def prosody_dim(cfg: DictConfig) -> int:
    """Prosody channels appended to the encoder features for stage 1 (``stage1.prosody: true`` with an encoder that
    has none of its own)."""
    from avitalk.encoders import encoder_prosody_dim

    return PROSODY_DIM if bool(cfg.stage1.prosody) and not encoder_prosody_dim(cfg.audio_encoder) else 0


def speech_features(cfg: DictConfig, audio: Audio, encoder=None, encoded: np.ndarray | None = None) -> np.ndarray:
    """Stage 1's input for one Audio: encoder features [T, D] (+ prosody channels when the config asks)."""
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.prosody import ProsodyEncoder

    if encoded is None:
        encoded = (encoder or audio_encoder_from_config(cfg.audio_encoder)).encode(audio)
    if not prosody_dim(cfg):
        return encoded
    p = ProsodyEncoder().encode(audio)
    n = min(len(encoded), len(p))
    return np.concatenate([encoded[:n], p[:n]], 1)


def build_qformer(cfg: DictConfig, llm_dim: int):
    from avitalk.config import resolve_config
    from avitalk.encoders import encoder_prosody_dim

    cfg = resolve_config(cfg, "stage-1 config")
    from .qformer import QFormer

    enc_p = encoder_prosody_dim(cfg.audio_encoder)  # the encoder's own trailing prosody channels get their projection
    return QFormer(feature_dim=int(cfg.audio_dim or 384) - enc_p, llm_dim=llm_dim,
                   prosody_dim=prosody_dim(cfg) + enc_p, **OmegaConf.to_container(cfg.stage1.qformer))


def cut_sentence(text: str) -> str:
    text = " ".join(text.split())
    for end in (". ", "! ", "? "):
        if end in text:
            text = text[: text.index(end) + 1]
    return text


def to_instruction(text: str) -> Instruction:
    """An Instruction with emotion / intensity / actions parsed when the text follows the vocabulary."""
    from avitalk.vocab import parse_instruction

    return parse_instruction(text.strip() or "A person speaks.")


# ---------------------------------------------------------------------------- the transformers + peft model (training)
def build_model(cfg: DictConfig, tokenizer, llm, text_dim: int):
    """A trainable InstructionModel around a transformers causal LM (LoRA added by peft) and a new Q-Former."""
    from avitalk.config import resolve_config

    from .model import InstructionModel

    cfg = resolve_config(cfg, "stage-1 config")
    s1 = cfg.stage1
    return InstructionModel(llm, tokenizer, build_qformer(cfg, llm.config.hidden_size), load_prompts()[0],
                            text_dim=text_dim, lora=OmegaConf.to_container(s1.lora),
                            chat_template=bool(s1.chat_template))


def save_stage1(model, out: Path, cfg: DictConfig) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "tokenizer") as tmp:
        model.tokenizer.save_pretrained(str(tmp))
    with atomic_dir(out / "adapter") as tmp:
        model.llm.save_pretrained(str(tmp))  # the LoRA weights only (peft format)
    state = {f"qformer.{k}": v for k, v in model.qformer.state_dict().items()}
    state.update({f"align.{k}": v for k, v in model.align.state_dict().items()})
    state.update({f"aux.{k}": v for k, v in model.aux.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    with atomic_path(out / "qformer.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(out / "stage1.yaml", OmegaConf.to_yaml(cfg))


def load_stage1(ckpt: str | os.PathLike, text_dim: int = 384, cfg: DictConfig | None = None):
    """Rebuild the instruction model from a checkpoint directory (never unpickles). ``cfg`` replaces the folder's
    ``stage1.yaml`` (a pipeline checkpoint keeps one ``config.yaml`` for both stages). Weights stored in float16 are
    loaded as float32."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(ckpt)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    for need in ("stage1.yaml",) * (cfg is None) + ("tokenizer", "lm", "adapter", "qformer.safetensors"):
        if not (d / need).exists():
            raise CheckpointError(f"{d}: missing stage-1 component {need}")
    if cfg is None:
        cfg = OmegaConf.load(d / "stage1.yaml")
    try:
        tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(d / "lm")).float()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: stage-1 language model or tokenizer unreadable ({e})") from e
    try:
        llm = PeftModel.from_pretrained(llm, str(d / "adapter"))
    except Exception as e:  # noqa: BLE001 - peft raises many kinds
        raise CheckpointError(f"{d / 'adapter'}: LoRA adapter does not match the language model ({e})") from e
    model = build_model(cfg, tok, llm, text_dim)
    state = load_file(str(d / "qformer.safetensors"))
    try:
        model.qformer.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("qformer.")})
        model.align.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
        model.aux.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("aux.")})
    except RuntimeError as e:
        raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
    model.logit_scale.data.copy_(state["logit_scale"])
    return model.float().eval(), cfg


def save_lm(tok, llm, out: Path) -> None:
    """``tokenizer/`` (unless ``tok`` is None) and ``lm/``: the frozen LM alone (a peft model is saved without its
    LoRA layers)."""
    if tok is not None:
        with atomic_dir(out / "tokenizer") as tmp:
            tok.save_pretrained(str(tmp))
    from peft import PeftModel

    with atomic_dir(out / "lm") as tmp:
        (_plain_llm(llm) if isinstance(llm, PeftModel) else llm).save_pretrained(str(tmp))


def _plain_llm(peft_model):
    """The frozen language model without the LoRA layers peft wrapped into it (for saving the LM alone)."""
    from transformers import AutoModelForCausalLM

    base = peft_model.get_base_model()
    state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
    plain = AutoModelForCausalLM.from_config(base.config)
    plain.load_state_dict(state, strict=False)
    missing = set(plain.state_dict()) - set(state)
    if missing - {k for k in missing if "rotary" in k or k == "lm_head.weight"}:
        raise CheckpointError(f"could not separate the language model from its adapter (missing {sorted(missing)[:3]})")
    return plain



class Instructor:
    """Q-Former + projection + LM (+ LoRA) + tokenizer, for generation. ``lm`` is a LlamaLite or a transformers /
    peft causal LM; ``tokenizer`` a LeanTokenizer or a transformers tokenizer."""

    def __init__(self, cfg: DictConfig, qformer, lm, tokenizer, prompt: str, chat_template: bool = False,
                 heads: dict[str, torch.Tensor] | None = None, adapter_config: dict | None = None,
                 tokenizer_files: dict[str, bytes] | None = None):
        from avitalk.config import resolve_config

        self.cfg = None if cfg is None else resolve_config(cfg, "stage-1 config")
        self.qformer = qformer.eval()
        self.lm = lm
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.chat_template = chat_template
        self._heads = heads or {}  # training-only heads (align, aux, logit_scale), kept so saving loses nothing
        self.emotion_guidance: float | None = None  # overrides the config's stage1.emotion_guidance when set
        self._emo_tokens: tuple[list[int], list[int]] | None = None
        self._adapter_config = adapter_config
        self._tokenizer_files = tokenizer_files
        self._encoder = None  # the config's audio encoder, made when stage 1 must encode audio itself
        self._last_listened: tuple | None = None  # (samples, pad, encoder, rows): instruct + heard encode once
        self.reader = None  # the emotion reader (stage1_instruct.reader), when the checkpoint has one
        self._reader_encoder = None  # stage1.reader_encoder, made when first needed
        self._last_utterance: tuple | None = None  # (samples, features, stats): instruct + heard read a clip once

    @property
    def lean(self) -> bool:
        from avitalk.lean.llama import LlamaLite

        return isinstance(self.lm, LlamaLite)

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def load(cls, ckpt: str | os.PathLike, cfg: DictConfig | None = None, lean: bool = True) -> "Instructor":
        """Stage 1 of a pipeline folder (``cfg`` = its config) or of an `avitalk train stage1` folder (its
        ``stage1.yaml``). Never unpickles; float16 weights are loaded as float32."""
        from safetensors.torch import load_file

        d = Path(ckpt)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such checkpoint folder")
        for need in ("stage1.yaml",) * (cfg is None) + LM_PARTS:
            if not (d / need).exists():
                raise CheckpointError(f"{d}: missing stage-1 component {need}")
        if cfg is None:
            cfg = OmegaConf.load(d / "stage1.yaml")
        from avitalk.config import resolve_config

        cfg = resolve_config(cfg, str(d))
        if lean:
            from avitalk.lean.llama import LlamaLite, UnsupportedModel
            from avitalk.lean.tokenizer import LeanTokenizer

            try:
                lm = LlamaLite.from_pretrained(d / "lm", d / "adapter")
                tok = LeanTokenizer(d / "tokenizer")
                if bool(cfg.stage1.chat_template) or tok.bos_token_id is None:
                    raise UnsupportedModel("chat template or no BOS token")
            except (UnsupportedModel, OSError, ValueError, KeyError) as e:
                log.info("stage 1 LM on transformers (%s)", e)
                lean = False
        state = load_file(str(d / "qformer.safetensors"))
        if not lean:
            text_dim = int(state["align.weight"].shape[0]) if "align.weight" in state else 384
            return cls.from_model(load_stage1(d, text_dim=text_dim, cfg=cfg)[0], cfg).load_reader(d)
        q = build_qformer(cfg, lm.hidden_size)
        try:
            q.load_state_dict({k[8:]: v.float() for k, v in state.items() if k.startswith("qformer.")})
        except RuntimeError as e:
            raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
        files = {p.name: p.read_bytes() for p in (d / "tokenizer").iterdir() if p.is_file()}
        ins = cls(cfg, q, lm, tok, load_prompts()[0], heads={k: v for k, v in state.items() if not k.startswith("qformer.")},
                  adapter_config=json.loads((d / "adapter" / "adapter_config.json").read_text()), tokenizer_files=files)
        return ins.load_reader(d)

    def load_reader(self, d: str | os.PathLike) -> "Instructor":
        """Take the emotion reader of folder ``d`` when it has one (``reader.safetensors``)."""
        from .reader import READER_FILE, EmotionReader

        if (Path(d) / READER_FILE).is_file():
            self.reader = EmotionReader.load(Path(d) / READER_FILE)
        return self

    @classmethod
    def from_model(cls, model, cfg: DictConfig) -> "Instructor":
        """Share the parts of a (training) InstructionModel: generation during training and evaluation."""
        ins = cls(cfg, model.qformer, model.llm, model.tokenizer, model.prompt, model.chat_template,
                  heads={f"aux.{k}": v.detach() for k, v in model.aux.state_dict().items()})
        ins._model = model
        return ins

    def save(self, out: str | os.PathLike) -> None:
        """Write ``tokenizer/``, ``lm/`` (the frozen LM alone), ``adapter/`` (peft LoRA) and ``qformer.safetensors``."""
        from safetensors.torch import save_file

        from avitalk.io import atomic_write_bytes, atomic_write_json

        out = Path(out)
        if self.reader is not None:
            from .reader import READER_FILE

            out.mkdir(parents=True, exist_ok=True)
            self.reader.save(out / READER_FILE)
        if not self.lean:
            save_stage1(self._model, out, self.cfg)
            (out / "stage1.yaml").unlink()
            save_lm(None, self._model.llm, out)
            return
        out.mkdir(parents=True, exist_ok=True)
        with atomic_dir(out / "tokenizer") as tmp:
            for name, data in (self._tokenizer_files or {}).items():
                atomic_write_bytes(tmp / name, data)
        lm_state, lora = {}, {}
        for k, v in self.lm.state_dict().items():
            if k != "lm_head.weight" or not self.lm.c["tie_word_embeddings"]:
                lm_state[k.replace(".base.", ".")] = v.detach().contiguous().cpu()
        for name, mod in self.lm.named_modules():
            if getattr(mod, "lora_A", None) is not None:
                lora[f"base_model.model.{name}.lora_A.weight"] = mod.lora_A.detach().contiguous().cpu()
                lora[f"base_model.model.{name}.lora_B.weight"] = mod.lora_B.detach().contiguous().cpu()
        with atomic_dir(out / "lm") as tmp:
            save_file(lm_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "config.json", self.lm.config)
        with atomic_dir(out / "adapter") as tmp:
            save_file(lora, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "adapter_config.json", self._adapter_config)
        state = {f"qformer.{k}": v for k, v in self.qformer.state_dict().items()}
        state.update(self._heads)
        with atomic_path(out / "qformer.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))

    def to(self, device, lm_dtype: torch.dtype | None = None) -> "Instructor":
        """Move to ``device``; ``lm_dtype`` (e.g. ``torch.bfloat16``) also casts the LLM (half the memory and about
        twice the decoding speed of float32 for a 7B model on a GPU); the Q-Former stays float32."""
        self.qformer.to(device)
        self.lm.to(device) if lm_dtype is None else self.lm.to(device, lm_dtype)
        self._heads = {k: v.to(device) for k, v in self._heads.items()}  # the emotion head votes where it runs
        return self

    def parameters(self):
        yield from self.qformer.parameters()
        yield from self.lm.parameters()

    def describe(self) -> dict[str, int]:
        if self.lean:
            lora = sum(m.lora_A.numel() + m.lora_B.numel() for m in self.lm.modules() if getattr(m, "lora_A", None) is not None)
            llm = sum(p.numel() for p in self.lm.parameters()) - (self.lm.lm_head.weight.numel()
                                                                   if self.lm.c["tie_word_embeddings"] else 0)
        else:
            llm = sum(p.numel() for n, p in self.lm.get_base_model().named_parameters() if "lora_" not in n)
            lora = sum(p.numel() for n, p in self.lm.named_parameters() if "lora_" in n)
        return {"llm": llm, "lora": lora, "qformer": sum(p.numel() for p in self.qformer.parameters())}

    # ---------------------------------------------------------------- generation
    def token_ids(self, text: str) -> list[int]:
        """The LM's token ids of `` text`` (no special tokens)."""
        from .prefix import prompt_ids

        return prompt_ids(self.tokenizer, text)

    def _prompt_ids(self, prompt: str | None = None) -> list[int]:
        from .prefix import prompt_ids

        return prompt_ids(self.tokenizer, prompt or self.prompt, self.chat_template)

    def prefix(self, feats: torch.Tensor, mask: torch.Tensor | None, prompts: Sequence[str] | None = None,
               use_speech: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[BOS | speech tokens | prompt] embeddings [B, P, H] (left-padded), attention mask, pooled queries."""
        from .prefix import speech_prefix

        pids = [self._prompt_ids(p) for p in (prompts or [None] * feats.shape[0])]
        return speech_prefix(self.qformer, self.lm.get_input_embeddings(), self.tokenizer.bos_token_id, pids, feats,
                             mask, use_speech)

    # ---------------------------------------------------------------- emotion guidance
    def _emotion_tokens(self) -> tuple[list[int], list[int]]:
        """Token ids that begin an emotion word of the vocabulary, and the emotion (index into EMOTIONS) of each: only
        tokens that begin one emotion's words and appear nowhere else in the vocabulary's sentences."""
        if self._emo_tokens is None:
            from avitalk.vocab import EMOTIONS, load_vocabulary

            v = load_vocabulary()
            other_text = [t.replace("{emotion}", " ").replace("{person}", " ").replace("{actions}", " ")
                          for t in v.templates]
            other_text += [w for ws in v.persons.values() for w in ws]
            other_text += [a["part"] for a in v.actions.values()]
            other_text += [p for a in v.actions.values() for p in a["participles"]]
            other_text += [w for d in v.degrees for w in d["words"]]
            other = {i for t in other_text for i in self.token_ids(" " + t) + self.token_ids(t)}
            owner: dict[int, set] = {}
            for e, levels in v.emotions.items():
                if e not in EMOTIONS:
                    continue
                for words in levels.values():
                    for w in words:
                        for form in (" " + w, w):
                            ids = self.token_ids(form)
                            if ids:
                                owner.setdefault(ids[0], set()).add(EMOTIONS.index(e))
            keep = sorted(t for t, es in owner.items() if len(es) == 1 and t not in other)
            self._emo_tokens = (keep, [next(iter(owner[t])) for t in keep])
        return self._emo_tokens

    def emotion_bias(self, pooled: torch.Tensor, strength: float, utterance=None) -> torch.Tensor | None:
        """[B, vocab] logit bias: ``strength`` x the log-probability of each emotion (:meth:`emotion_log_probs`: the
        emotion reader's, or without one the Q-Former's emotion head's), on the tokens that begin that emotion's
        words. None without either or at strength 0."""
        logp = self.emotion_log_probs(pooled, utterance) if strength else None
        if logp is None:
            return None
        ids, emo = self._emotion_tokens()
        vocab = self.lm.get_input_embeddings().num_embeddings
        bias = torch.zeros(pooled.shape[0], vocab, device=pooled.device)
        bias[:, ids] = float(strength) * logp[:, emo]
        return bias

    @torch.no_grad()
    def heard(self, audio: Audio, features: np.ndarray | None = None, encoder=None) -> dict[str, float] | None:
        """How stage 1 hears the voice: ``{emotion: probability}``, most likely first: the emotion reader's calibrated
        probabilities (without a reader: the Q-Former emotion head's softmax, uncalibrated). None with neither. Reads
        what :meth:`instruct` reads (the first 30 s)."""
        from avitalk.vocab import EMOTIONS

        utt = self.utterance(audio, features, encoder)
        if utt is not None:
            p = self.reader.probs(utt)[0]
        else:
            if "aux.weight" not in self._heads or "aux.bias" not in self._heads:
                return None
            dev = next(self.qformer.parameters()).device
            f = torch.as_tensor(self._listened(audio, features, encoder, warn=False))[None].to(dev)
            _, _, pooled = self.prefix(f, torch.ones(f.shape[:2], dtype=torch.bool, device=dev))
            p = torch.softmax(self._emotion_logits(pooled)[0].cpu(), -1)
        return {EMOTIONS[i]: float(p[i]) for i in p.argsort(descending=True).tolist()}

    def emotion_log_probs(self, pooled: torch.Tensor, utterance=None) -> torch.Tensor | None:
        """[B, len(EMOTIONS)] log-probabilities that guide the emotion word: the emotion reader's for ``utterance``
        statistics (all the weight on neutral where it is not sure enough to name an emotion:
        :meth:`EmotionReader.vote_log_probs <stage1_instruct.reader.EmotionReader.vote_log_probs>`); without a reader,
        the Q-Former head's softmax. None with neither."""
        if self.reader is not None and utterance is not None:
            return self.reader.vote_log_probs(utterance).to(pooled.device)
        z = self._emotion_logits(pooled)
        return None if z is None else torch.log_softmax(z, -1)

    def utterance(self, audio: Audio, features: np.ndarray | None = None, encoder=None) -> np.ndarray | None:
        """[1, 2 D] the emotion reader's statistics of a clip (features of the audio as given, over its speech span);
        None without a reader. ``features``: the encoder's output for the audio, if already computed."""
        if self.reader is None:
            return None
        from .reader import utterance_stats

        last = self._last_utterance  # the same clip again (instruct, then heard): its statistics once
        if last is not None and last[0] is audio.samples and last[1] is features:
            return last[2]
        samples, given = audio.samples, features
        audio, features = _first_listen(audio, features, warn=False)
        if self.cfg is not None and self.cfg.stage1.reader_encoder:  # the reader's own encoder
            if self._reader_encoder is None:
                from avitalk.encoders import audio_encoder_from_config

                self._reader_encoder = audio_encoder_from_config(self.cfg.stage1.reader_encoder)
            rows = self._reader_encoder.encode(audio)
        else:
            rows = speech_features(self.cfg, audio, encoder if features is not None else self._encoder_for(encoder),
                                   encoded=features)
        stats = utterance_stats(rows, audio.samples)[None]
        self._last_utterance = (samples, given, stats)
        return stats

    def _encoder_for(self, encoder):
        """``encoder``, or the config's audio encoder (made once) when stage 1 must encode audio itself."""
        if encoder is not None:
            return encoder
        if self._encoder is None:
            from avitalk.encoders import audio_encoder_from_config

            self._encoder = audio_encoder_from_config(self.cfg.audio_encoder)
        return self._encoder

    def _emotion_logits(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """The Q-Former emotion head's logits [B, len(EMOTIONS)] for pooled queries; None without the head."""
        w, b = self._heads.get("aux.weight"), self._heads.get("aux.bias")
        if w is None or b is None:
            return None
        from avitalk.vocab import EMOTIONS

        return (pooled.float() @ w.float().T + b.float())[:, : len(EMOTIONS)]

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
        Q-Former's emotion head) into the choice of the emotion word (:meth:`emotion_bias`); 0 leaves the LLM alone.
        ``utterance``: [B, 2 D] statistics for the emotion reader (:meth:`utterance`)."""
        pre, pmask, pooled = self.prefix(feats, mask, None, use_speech)
        g = self._guidance() if emotion_guidance is None else float(emotion_guidance)
        bias = self.emotion_bias(pooled, g, utterance) if use_speech else None
        if bias is not None:
            bias = EmotionVote(bias, self._emotion_tokens()[0])
        if seed is not None:
            torch.manual_seed(seed)
        tok = self.tokenizer
        if self.lean:
            if num_beams != 1:
                raise ValueError("beam search needs the transformers LM (Instructor.load(..., lean=False))")
            out = self.lm.generate(pre, pmask, max_new_tokens, tok.eos_token_id, tok.pad_token_id, do_sample,
                                   temperature, top_p, num_samples, logit_bias=bias)
            texts = [tok.decode(row.tolist()) for row in out]
        else:
            extra = {}
            if bias is not None:
                from transformers import LogitsProcessorList

                extra["logits_processor"] = LogitsProcessorList([_Vote(bias)])
            out = self.lm.generate(
                inputs_embeds=pre, attention_mask=pmask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                num_beams=num_beams, num_return_sequences=num_samples, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, **extra,
            )
            texts = tok.batch_decode(out, skip_special_tokens=True)
        texts = [fix_articles(cut_sentence(t)) for t in texts]
        return [texts[b * num_samples : (b + 1) * num_samples] for b in range(feats.shape[0])]

    def instruct(self, audio: Audio, features: np.ndarray | None = None, num_samples: int = 1, seed: int = 0,
                 encoder=None) -> list[Instruction]:
        """``num_samples`` instructions for one Audio (greedy for one, nucleus sampling for several); reads the first
        :data:`MAX_LISTEN_S` seconds. ``features``: the audio encoder's output if already computed."""
        dev = next(self.qformer.parameters()).device
        f = torch.as_tensor(self._listened(audio, features, encoder, warn=True))[None].to(dev)
        m = torch.ones(f.shape[:2], dtype=torch.bool, device=dev)
        texts = self.generate(f, m, num_samples=num_samples, do_sample=num_samples > 1, seed=seed,
                              utterance=self.utterance(audio, features, encoder))[0]
        return [to_instruction(t) for t in texts]

    def _listened(self, audio: Audio, features: np.ndarray | None, encoder, warn: bool) -> np.ndarray:
        """Stage 1's input for one clip: its first :data:`MAX_LISTEN_S` seconds (encoder features + prosody). With
        ``stage1.listen_pad_s`` the speech is first put between that much faint noise on each side
        (:func:`avitalk.audio.even_margins`), so how tightly a recording was cut does not change what stage 1 hears;
        then ``features`` (the encoder's output for the audio as given) cannot be used and the audio is encoded again."""
        audio, features = _first_listen(audio, features, warn)
        pad = float(self.cfg.stage1.get("listen_pad_s", 0.0) or 0.0) if self.cfg is not None else 0.0
        if pad <= 0:
            return np.asarray(speech_features(self.cfg, audio, encoder, encoded=features), np.float32)
        from avitalk.audio import even_margins

        encoder = self._encoder_for(encoder)
        last = self._last_listened  # the same clip again (instruct, then heard): encoded once
        if last is not None and last[0] is audio.samples and last[1] == pad and last[2] is encoder:
            return last[3]
        padded = Audio(even_margins(audio.samples, pad), audio.sample_rate, audio.source)
        rows = np.asarray(speech_features(self.cfg, padded, encoder), np.float32)
        self._last_listened = (audio.samples, pad, encoder, rows)
        return rows

    def instruct_many(self, audios: Sequence[Audio], features: Sequence[np.ndarray | None] | None = None,
                      batch_size: int = 32, encoder=None) -> list[Instruction]:
        """One greedy instruction per clip, clips batched (evaluation): the same texts as ``instruct`` clip by clip.
        Clips are sorted by length so that a batch pads little; each reads its first :data:`MAX_LISTEN_S` seconds."""
        feats = list(features) if features is not None else [None] * len(audios)
        if len(feats) != len(audios):
            raise ValueError(f"{len(audios)} clips but {len(feats)} feature arrays")
        rows = [self._listened(a, f, encoder, warn=False) for a, f in zip(audios, feats)]
        utts = [self.utterance(a, f, encoder) for a, f in zip(audios, feats)]
        dev = next(self.qformer.parameters()).device
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list[Instruction | None] = [None] * len(rows)
        for b in range(0, len(order), max(1, int(batch_size))):
            idx = order[b : b + batch_size]
            T = max(len(rows[i]) for i in idx)
            f = torch.zeros((len(idx), T, rows[idx[0]].shape[1]))
            m = torch.zeros((len(idx), T), dtype=torch.bool)
            for k, i in enumerate(idx):
                f[k, : len(rows[i])] = torch.from_numpy(rows[i])
                m[k, : len(rows[i])] = True
            utt = None if utts[idx[0]] is None else np.concatenate([utts[i] for i in idx])
            for i, texts in zip(idx, self.generate(f.to(dev), m.to(dev), utterance=utt)):
                out[i] = to_instruction(texts[0])
        return out  # type: ignore[return-value]


def _first_listen(audio: Audio, features: np.ndarray | None, warn: bool) -> tuple[Audio, np.ndarray | None]:
    """The first :data:`MAX_LISTEN_S` seconds of a clip and of its features (what stage 1 reads)."""
    if audio.duration <= MAX_LISTEN_S:
        return audio, features
    if warn:
        log.warning("stage 1 reads the first %.0f s of %.1f s of speech", MAX_LISTEN_S, audio.duration)
    audio = Audio(audio.samples[: int(MAX_LISTEN_S * audio.sample_rate)], audio.sample_rate, audio.source)
    return audio, None if features is None else features[: int(MAX_LISTEN_S * FEATURE_RATE)]


class EmotionVote:
    """The vote on the emotion word, applied to each step's logits [B, vocab]: where the LLM's own most likely next
    token begins an emotion word, the token is chosen among the emotion-word starts only, each scored by the LLM plus
    its row of ``bias`` (W x the vote's log-probability of that word's emotion); elsewhere the logits are left alone.
    So the vote decides *which* emotion the LLM writes, never whether it writes one (a bias alone could push every
    emotion word below some other token, and the LLM then started its sentence again)."""

    def __init__(self, bias: torch.Tensor, token_ids: list[int]):
        self.bias = bias
        self.mask = torch.zeros(bias.shape[1], dtype=torch.bool)
        self.mask[torch.as_tensor(token_ids, dtype=torch.long)] = True

    def repeat_rows(self, n: int, device=None) -> "EmotionVote":
        out = EmotionVote.__new__(EmotionVote)
        out.bias = self.bias.to(device).repeat_interleave(n, 0)
        out.mask = self.mask.to(device)
        return out

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(logits.device, logits.dtype)
        if b.shape[0] != logits.shape[0]:  # rows repeated for beams / returned sequences
            b = b.repeat_interleave(logits.shape[0] // b.shape[0], 0)
        m = self.mask.to(logits.device)
        wants = m[logits.argmax(-1)]
        voted = (logits + b).masked_fill(~m, float("-inf"))
        return torch.where(wants[:, None], voted, logits)


class _Vote:
    """transformers logits processor around an :class:`EmotionVote`."""

    def __init__(self, vote: EmotionVote):
        self.vote = vote

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.vote(scores)


__all__ = ["Instructor", "MAX_LISTEN_S", "load_prompts", "speech_features", "to_instruction", "cut_sentence"]
