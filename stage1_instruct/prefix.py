"""The LLM's input prefix, shared by training (:class:`~.model.InstructionModel`) and inference
(:class:`~.instructor.Instructor`): [BOS | speech tokens | prompt tokens], left-padded to the longest prompt."""

from __future__ import annotations

from typing import Sequence

import torch


def prompt_ids(tokenizer, text: str, chat_template: bool) -> list[int]:
    """Token ids of `` text`` without special tokens (a transformers tokenizer wraps it in its chat template when
    ``chat_template``); works with a transformers tokenizer or a LeanTokenizer."""
    if getattr(tokenizer, "lean", False):
        return tokenizer.encode(" " + text)
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def speech_prefix(qformer, embed, bos_id: int, pids: Sequence[Sequence[int]], feats: torch.Tensor,
                  mask: torch.Tensor | None, use_speech: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings [B, P, H] (left-padded), attention mask [B, P] and pooled queries [B, d] for features [B, T, D];
    ``embed`` is the LLM's input embedding; ``pids`` the prompt's ids per row; ``use_speech=False`` drops the speech
    tokens (the ablation)."""
    B, dev = feats.shape[0], feats.device
    speech, q = qformer(feats, mask)
    if not use_speech:
        speech = speech[:, :0]
    bos = embed(torch.tensor([bos_id], device=dev))
    speech = speech.to(bos.dtype)  # the LLM may run in bf16 (Instructor.to(..., lm_dtype=...))
    P = max(len(p) for p in pids)
    rows, masks = [], []
    for b in range(B):
        row = torch.cat([bos, speech[b], embed(torch.tensor(list(pids[b]), device=dev))])
        pad = P - len(pids[b])
        rows.append(torch.cat([row.new_zeros(pad, row.shape[1]), row]))
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(len(row), dtype=torch.long)]))
    return torch.stack(rows), torch.stack(masks).to(dev), qformer.pooled(q)
