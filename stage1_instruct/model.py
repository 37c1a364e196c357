"""InstructionModel: speech features -> a MeadText-style audio-visual instruction.

Input to the frozen causal LLM (adapted with peft LoRA) is ``inputs_embeds`` = [BOS | speech tokens | prompt tokens |
instruction tokens]; training is cross-entropy on the instruction tokens only, plus a contrastive loss aligning the
pooled Q-Former output with the instruction's sentence embedding. Trainable: Q-Former, projection, LoRA. Generation
is :class:`~.instructor.Instructor`'s (``Instructor.from_model(model, cfg)`` shares this model's parts).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from omegaconf import DictConfig, OmegaConf

from avitalk.dropout import cheap_dropouts

from .qformer import QFormer

log = logging.getLogger(__name__)


def load_prompts() -> list[str]:
    """The prompts stage 1's LLM is given after the speech tokens (``prompts/stage1.yaml``); the first at inference."""
    import yaml

    from avitalk.vocab import prompts_dir

    return list(yaml.safe_load((prompts_dir() / "stage1.yaml").read_text())["prompts"])


def build_qformer(cfg: DictConfig, llm_dim: int) -> QFormer:
    """The Q-Former + projection of a stage-1 config, for an LLM of width ``llm_dim``."""
    from avitalk.config import ConfigError, resolve_config
    from avitalk.encoders import encoder_prosody_dim

    from .hearing import prosody_dim

    cfg = resolve_config(cfg, "stage-1 config")
    enc_p = encoder_prosody_dim(cfg.audio_encoder)  # the encoder's own trailing prosody channels get their projection
    if cfg.audio_dim is None:
        raise ConfigError("stage-1 config: audio_dim is not set (training writes the audio encoder's feature size)")
    return QFormer(feature_dim=int(cfg.audio_dim) - enc_p, llm_dim=llm_dim,
                   prosody_dim=prosody_dim(cfg) + enc_p, **OmegaConf.to_container(cfg.stage1.qformer))


def build_model(cfg: DictConfig, tokenizer, llm, text_dim: int) -> "InstructionModel":
    """A trainable InstructionModel around a transformers causal LM (LoRA added by peft) and a new Q-Former."""
    from avitalk.config import resolve_config

    cfg = resolve_config(cfg, "stage-1 config")
    s1 = cfg.stage1
    return InstructionModel(llm, tokenizer, build_qformer(cfg, llm.config.hidden_size), load_prompts()[0],
                            text_dim=text_dim, lora=OmegaConf.to_container(s1.lora),
                            chat_template=bool(s1.chat_template))


class InstructionModel(nn.Module):
    def __init__(self, llm, tokenizer, qformer: QFormer, prompt: str, *, text_dim: int, lora: dict[str, Any],
                 chat_template: bool):
        super().__init__()
        from peft import LoraConfig, PeftModel, get_peft_model

        self.tokenizer = tokenizer
        if isinstance(llm, PeftModel):  # loaded with its trained adapter
            self.llm = llm
        else:
            for p in llm.parameters():
                p.requires_grad_(False)
            self.llm = get_peft_model(llm, LoraConfig(task_type="CAUSAL_LM", **lora))
        cheap_dropouts(self.llm)  # LoRA's input dropout (and any in the LLM): avitalk.dropout
        self.qformer = qformer
        self.align = nn.Linear(qformer.pooled_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        # auxiliary heads on the pooled queries (used in training only, where the clip's labels are known)
        from avitalk.vocab import EMOTIONS, INTENSITIES

        self.num_emotions = len(EMOTIONS)
        self.aux = nn.Linear(qformer.pooled_dim, len(EMOTIONS) + len(INTENSITIES))
        self.prompt = prompt
        self.chat_template = chat_template

    # ---------------------------------------------------------------- inputs
    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def prefix(self, feats: torch.Tensor, mask: torch.Tensor | None, prompts: Sequence[str] | None = None,
               use_speech: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[BOS | speech tokens | prompt] embeddings [B, P, H] (left-padded), attention mask, pooled queries."""
        from .prefix import prompt_ids, speech_prefix

        pids = [prompt_ids(self.tokenizer, p or self.prompt, self.chat_template) for p in (prompts or [None] * len(feats))]
        return speech_prefix(self.qformer, self.llm.get_input_embeddings(), self.tokenizer.bos_token_id, pids, feats,
                             mask, use_speech)

    # ---------------------------------------------------------------- training
    def speech_losses(self, pooled: torch.Tensor, text_emb: torch.Tensor | None = None,
                      emotion: torch.Tensor | None = None, intensity: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses on the pooled queries alone: ``contrastive`` (vs the instruction's sentence embedding) and ``aux``
        (emotion / intensity classification; labels -100 are ignored)."""
        losses: dict[str, torch.Tensor] = {}
        if text_emb is not None:
            a = nn.functional.normalize(self.align(pooled), dim=-1)
            b = nn.functional.normalize(text_emb, dim=-1)
            logits = self.logit_scale.exp().clamp(max=100) * a @ b.T
            target = torch.arange(len(pooled), device=pooled.device)
            losses["contrastive"] = 0.5 * (nn.functional.cross_entropy(logits, target)
                                           + nn.functional.cross_entropy(logits.T, target))
        if emotion is not None and (emotion != -100).any():
            logits = self.aux(pooled)
            k = self.num_emotions
            aux = nn.functional.cross_entropy(logits[:, :k], emotion, ignore_index=-100)
            if intensity is not None and (intensity != -100).any():
                aux = aux + nn.functional.cross_entropy(logits[:, k:], intensity, ignore_index=-100)
            losses["aux"] = aux
        return losses

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None, texts: Sequence[str],
                text_emb: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                use_speech: bool = True, *, contrastive_weight: float, aux_weight: float, keyword_weight: float,
                warmup: bool, emotion: torch.Tensor | None = None, intensity: torch.Tensor | None = None,
                keyword_spans: Sequence[Sequence[tuple[int, int]]] | None = None) -> dict[str, torch.Tensor]:
        """Losses: ``lm`` (mean cross-entropy on the instruction tokens), ``contrastive``, ``aux`` and the weighted
        total ``loss`` (``warmup=True``: the Q-Former warm-up's ``aux`` + ``contrastive`` only, no LLM). Tokens inside ``keyword_spans`` (character spans of each text, e.g. its emotion word) count
        ``keyword_weight`` times in the total: one word decides the emotion, thirty decide the phrasing."""
        if warmup:  # the Q-Former's warm-up: its own heads only (emotion / intensity, and the text embedding)
            _, q = self.qformer(feats, mask)
            ls = self.speech_losses(self.qformer.pooled(q).float(), text_emb, emotion, intensity)
            ls["loss"] = ls.get("aux", 0.0) + ls["contrastive"]
            return ls
        pre, pmask, pooled = self.prefix(feats, mask, prompts, use_speech)
        enc = self.tokenizer([" " + t for t in texts], add_special_tokens=False,
                             return_offsets_mapping=keyword_spans is not None)
        tgt = enc["input_ids"]
        eos = self.tokenizer.eos_token_id
        L = max(len(t) for t in tgt) + 1
        dev = feats.device
        ids = torch.full((len(texts), L), self.tokenizer.pad_token_id, device=dev)
        tmask = torch.zeros((len(texts), L), device=dev)
        weight = torch.zeros((len(texts), L), device=dev)
        for b, t in enumerate(tgt):
            ids[b, : len(t) + 1] = torch.tensor(t + [eos], device=dev)
            tmask[b, : len(t) + 1] = 1
            weight[b, : len(t) + 1] = 1
            if keyword_spans is not None:
                for j, (s0, s1) in enumerate(enc["offset_mapping"][b]):
                    if any(s0 - 1 < e and a < s1 - 1 for a, e in keyword_spans[b]):  # offsets include the leading space
                        weight[b, j] = keyword_weight
        emb = torch.cat([pre, self._embed_ids(ids)], 1)
        att = torch.cat([pmask, tmask.long()], 1)
        logits = self.llm(inputs_embeds=emb, attention_mask=att).logits[:, pre.shape[1] - 1 : -1]
        ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1),
                                         reduction="none").view_as(tmask)
        losses = {"lm": (ce * tmask).sum() / tmask.sum()}
        weighted = (ce * weight).sum() / weight.sum()
        extra = self.speech_losses(pooled, text_emb if contrastive_weight > 0 else None,
                                   emotion if aux_weight > 0 else None, intensity)
        losses.update(extra)
        losses["loss"] = (weighted + contrastive_weight * extra.get("contrastive", 0.0)
                          + aux_weight * extra.get("aux", 0.0))
        return losses
