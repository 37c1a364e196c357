"""The slice of a Hugging Face fast tokenizer that inference needs, on the ``tokenizers`` library alone: a folder's
``tokenizer.json`` (+ ``tokenizer_config.json`` / ``special_tokens_map.json`` for the special tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch


def _token_text(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


class LeanTokenizer:
    lean = True  # tells shared code (stage 1's prompt building) which tokenizer API it has

    def __init__(self, directory: str | Path):
        from tokenizers import Tokenizer

        d = Path(directory)
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()
        conf: dict = {}  # special tokens and options; tokenizer_config.json wins over special_tokens_map.json
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (d / name).is_file():
                conf.update(json.loads((d / name).read_text()))
        special = {k: _token_text(v) for k, v in conf.items() if k.endswith("_token")}
        self.special = special
        self.clean_up = bool(conf.get("clean_up_tokenization_spaces", False))
        ids = {k: self.tok.token_to_id(v) for k, v in special.items() if isinstance(v, str)}
        self.bos_token_id, self.eos_token_id = ids.get("bos_token"), ids.get("eos_token")
        self.pad_token_id = ids.get("pad_token") if ids.get("pad_token") is not None else 0
        self.vocab_size = self.tok.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def batch(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Model inputs for ``texts`` with special tokens, truncated to ``max_length`` and right-padded to the
        longest: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 tensors)."""
        self.tok.enable_truncation(max_length)  # the post-processor's special tokens stay inside the limit
        try:
            rows = self.tok.encode_batch(list(texts), add_special_tokens=True)
        finally:
            self.tok.no_truncation()
        L = max(len(e.ids) for e in rows)
        out = {"input_ids": torch.full((len(rows), L), self.pad_token_id, dtype=torch.long),
               "attention_mask": torch.zeros((len(rows), L), dtype=torch.long),
               "token_type_ids": torch.zeros((len(rows), L), dtype=torch.long)}
        for i, e in enumerate(rows):
            n = len(e.ids)
            out["input_ids"][i, :n] = torch.tensor(e.ids)
            out["attention_mask"][i, :n] = 1
            out["token_type_ids"][i, :n] = torch.tensor(e.type_ids)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self.clean_up:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text
