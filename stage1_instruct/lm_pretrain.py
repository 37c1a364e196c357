"""The embedded default's language model: a byte-level BPE tokenizer (HF ``tokenizers``) and a tiny Llama trained by
us on the instruction text of the training split, then frozen and LoRA-tuned like a real LLM."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer as a transformers ``PreTrainedTokenizerFast`` (pad, bos, eos, unk specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(tokenizer, *, hidden: int, layers: int, heads: int, kv_heads: int, ff: int, max_positions: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def pretrain_lm(model, tokenizer, texts: Sequence[str], *, steps: int, batch_size: int, lr: float, seed: int,
                progress: bool = False) -> list[float]:
    """Causal-LM training on ``texts`` (each wrapped in bos/eos). Returns the loss curve (every 20 steps)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    texts = list(texts)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    from avitalk.training import warmup_cosine

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(50, steps, decay_from_start=True))
    model.train()
    curve = []
    for step in tqdm(range(steps), desc="stage1 lm", disable=not progress or None):
        batch = [tokenizer.bos_token + texts[i] + tokenizer.eos_token for i in rng.integers(0, len(texts), batch_size)]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            curve.append(float(loss.detach()))
    model.eval()
    return curve
