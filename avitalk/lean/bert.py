"""A BERT encoder in plain torch with the parameter names of ``transformers``' ``BertModel`` (post-LayerNorm layers,
GELU feed-forward, learned absolute positions, token types), for sentence encoders such as all-MiniLM-L6-v2.
Returns the last hidden states; pooling is the caller's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class _SelfAttention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int, eps: float | None):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(d_out, eps=eps)


class _Attention(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(d)
        self.output = _Dense(d, d, eps)


class BertLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = _Attention(d, eps)
        self.intermediate = _Dense(d, ff, None)
        self.output = _Dense(ff, d, eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        a = self.attention
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(a.self.query(x)), split(a.self.key(x)), split(a.self.value(x)), bias)
        x = a.output.LayerNorm(x + a.output.dense(y.transpose(1, 2).reshape(B, T, D)))
        return self.output.LayerNorm(x + self.output.dense(F.gelu(self.intermediate.dense(x))))


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, positions: int, types: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(positions, d)
        self.token_type_embeddings = nn.Embedding(types, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)


class _Encoder(nn.Module):
    def __init__(self, layers: list[BertLayer]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class BertLite(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` -> last hidden states [B, T, hidden_size]."""

    def __init__(self, vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 intermediate_size: int, max_position_embeddings: int = 512, type_vocab_size: int = 2,
                 layer_norm_eps: float = 1e-12, **_ignored):
        super().__init__()
        self.hidden_size = hidden_size
        self.embeddings = _Embeddings(vocab_size, hidden_size, max_position_embeddings, type_vocab_size, layer_norm_eps)
        self.encoder = _Encoder([BertLayer(hidden_size, num_attention_heads, intermediate_size, layer_norm_eps)
                                 for _ in range(num_hidden_layers)])

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BertLite":
        """A BERT folder (``config.json`` + ``model.safetensors``); the pooler, if stored, is not used."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act", "gelu") != "gelu" or \
                cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{d}: not a plain BERT (model_type {cfg.get('model_type')!r})")
        model = cls(**cfg)
        state = {k.removeprefix("bert."): v for k, v in load_file(str(d / "model.safetensors")).items()}
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}
        model.load_state_dict(state, strict=True)
        return model.float().eval().requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embeddings
        T = input_ids.shape[1]
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = e.word_embeddings(input_ids) + e.position_embeddings.weight[:T] + e.token_type_embeddings(types)
        x = e.LayerNorm(x)
        bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x
