"""Instruction metrics shared by stage 1's evaluation and the benchmark: emotion / intensity accuracy of the parsed
text, action-unit F1 against the reference instruction, BLEU (sacrebleu) and ROUGE-L."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L: the F-measure (beta = 1) of the longest common subsequence of words (Lin, 2004)."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], dp[i + 1][j])
    lcs = dp[-1][-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def instruction_scores(outs: Sequence[str], references: Sequence[Sequence[str]], emotions: Sequence[str | None],
                       intensities: Sequence[int | None]) -> dict[str, float]:
    """Scores of generated instructions against each clip's labels and reference instructions (the first reference
    for action units; up to three for BLEU; the best one for ROUGE-L)."""
    import sacrebleu

    from .vocab import load_vocabulary

    vocab = load_vocabulary()
    emo = inten = 0
    tp = fp = fn = 0
    for o, refs, e, i in zip(outs, references, emotions, intensities):
        p = vocab.parse(o)
        emo += p["emotion"] == e
        inten += p["intensity"] == i
        ref = {a for a, _ in vocab.parse(refs[0])["actions"]}
        got = {a for a, _ in p["actions"]}
        tp, fp, fn = tp + len(ref & got), fp + len(got - ref), fn + len(ref - got)
    n = max(len(outs), 1)
    streams = [[r[k] if k < len(r) else r[0] for r in references] for k in range(3)]
    return {
        "emotion_accuracy": emo / n,
        "intensity_accuracy": inten / n,
        "action_unit_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "bleu": float(sacrebleu.corpus_bleu(list(outs), streams).score),
        "rouge_l": float(np.mean([max(rouge_l(o, r) for r in refs) for o, refs in zip(outs, references)])),
    }
