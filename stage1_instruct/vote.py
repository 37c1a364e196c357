"""The vote on the emotion word: how the emotion reader's probabilities choose which emotion the LLM writes.

    guide = EmotionGuide(token_ids, heads)        # heads: the Q-Former's emotion head (aux.weight, aux.bias), if any
    guide.reader = EmotionReader.load(...)        # the calibrated reader (stage1_instruct.reader), when there is one
    vote = guide.vote(pooled, strength, stats, vocab_size)   # an EmotionVote, or None
    logits = vote(logits)                         # each generation step (lean runtime; TransformersVote for transformers)
"""

from __future__ import annotations

from typing import Callable

import torch


def emotion_tokens(token_ids: Callable[[str], list[int]]) -> tuple[list[int], list[int]]:
    """Token ids that begin an emotion word of the vocabulary, and the emotion (index into EMOTIONS) of each: only
    tokens that begin one emotion's words and appear nowhere else in the vocabulary's sentences. ``token_ids``: the
    LM tokenizer's ids of a text (no special tokens)."""
    from avitalk.vocab import EMOTIONS, load_vocabulary

    v = load_vocabulary()
    other_text = [t.replace("{emotion}", " ").replace("{person}", " ").replace("{actions}", " ") for t in v.templates]
    other_text += [w for ws in v.persons.values() for w in ws]
    other_text += [a["part"] for a in v.actions.values()]
    other_text += [p for a in v.actions.values() for p in a["participles"]]
    other_text += [w for d in v.degrees for w in d["words"]]
    other = {i for t in other_text for i in token_ids(" " + t) + token_ids(t)}
    owner: dict[int, set] = {}
    for e, levels in v.emotions.items():
        if e not in EMOTIONS:
            continue
        for words in levels.values():
            for w in words:
                for form in (" " + w, w):
                    ids = token_ids(form)
                    if ids:
                        owner.setdefault(ids[0], set()).add(EMOTIONS.index(e))
    keep = sorted(t for t, es in owner.items() if len(es) == 1 and t not in other)
    return keep, [next(iter(owner[t])) for t in keep]


def emotion_bias(log_probs: torch.Tensor, ids: list[int], emo: list[int], vocab_size: int,
                 strength: float) -> torch.Tensor:
    """[B, vocab] logit bias: ``strength`` x each emotion's log-probability [B, len(EMOTIONS)] on the tokens that
    begin that emotion's words (``ids``, ``emo`` from :func:`emotion_tokens`), 0 elsewhere."""
    bias = torch.zeros(log_probs.shape[0], vocab_size, device=log_probs.device)
    bias[:, ids] = float(strength) * log_probs[:, emo]
    return bias


class EmotionGuide:
    """Which emotion the instruction names. In: the Q-Former's pooled queries [B, Q] and the emotion reader's
    statistics [B, 2 D] (:meth:`.hearing.Hearing.utterance`). Out: log-probabilities over EMOTIONS [B, E] (the
    reader's, with all the weight on neutral where it is not sure enough to name an emotion; without a reader, the
    Q-Former emotion head's softmax, uncalibrated), and the :class:`EmotionVote` that makes the LLM's emotion word
    follow them. ``token_ids``: the LM tokenizer's ids of a text; ``heads``: tensors named ``aux.weight`` and
    ``aux.bias`` (the training head) or nothing."""

    def __init__(self, token_ids: Callable[[str], list[int]], heads: dict[str, torch.Tensor] | None = None):
        self.token_ids = token_ids
        self.heads = heads or {}
        self.reader = None
        self._tokens: tuple[list[int], list[int]] | None = None

    def tokens(self) -> tuple[list[int], list[int]]:
        """:func:`emotion_tokens` for this LM's tokenizer (computed once)."""
        if self._tokens is None:
            self._tokens = emotion_tokens(self.token_ids)
        return self._tokens

    def head_log_probs(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """[B, E] the Q-Former emotion head's log-softmax; None without the head."""
        w, b = self.heads.get("aux.weight"), self.heads.get("aux.bias")
        if w is None or b is None:
            return None
        from avitalk.vocab import EMOTIONS

        return torch.log_softmax((pooled.float() @ w.float().T + b.float())[:, : len(EMOTIONS)], -1)

    def log_probs(self, pooled: torch.Tensor, utterance=None) -> torch.Tensor | None:
        """[B, E] what guides the emotion word (see the class); None with neither a reader nor a head."""
        if self.reader is not None and utterance is not None:
            return self.reader.vote_log_probs(utterance).to(pooled.device)
        return self.head_log_probs(pooled)

    def bias(self, pooled: torch.Tensor, strength: float, vocab_size: int, utterance=None) -> torch.Tensor | None:
        """[B, vocab] ``strength`` x :meth:`log_probs` on the tokens that begin each emotion's words; None at strength
        0 or with neither a reader nor a head."""
        logp = self.log_probs(pooled, utterance) if strength else None
        if logp is None:
            return None
        ids, emo = self.tokens()
        return emotion_bias(logp, ids, emo, vocab_size, strength)

    def vote(self, pooled: torch.Tensor, strength: float, vocab_size: int, utterance=None) -> "EmotionVote | None":
        b = self.bias(pooled, strength, vocab_size, utterance)
        return None if b is None else EmotionVote(b, self.tokens()[0])


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


class TransformersVote:
    """transformers logits processor around an :class:`EmotionVote`."""

    def __init__(self, vote: EmotionVote):
        self.vote = vote

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.vote(scores)
