"""`avitalk eval` / eval.benchmark on a tiny random pipeline and a small SynthTalk corpus."""

import json

import numpy as np
import pytest

from avitalk.errors import DatasetError
from eval.benchmark import ROWS, run_benchmark, write_report

from .test_pipeline import build_tiny_pipeline


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from avitalk.data.synthtalk import generate

    return generate(tmp_path_factory.mktemp("bench") / "d", 16, seed=4, workers=1, progress=False).parent


@pytest.mark.slow
def test_benchmark_report_has_every_row_and_column(corpus, tmp_path):
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel

    pipe = build_tiny_pipeline()
    split = "test" if read_manifest(corpus, "test") else "train"
    res = run_benchmark(pipe, corpus, split=split, samples=3, diversity_clips=2, progress=False,
                        evaluator_steps=(10, 10))
    assert set(res["table"]) == set(ROWS)
    for row, r in res["table"].items():
        for k in ("fid", "lse_d", "lse_c", "lve_squared_max_mm2", "lve_euclidean_max_mm", "mve_mm", "fdd_mm2",
                  "emotion_accuracy"):
            assert r[k] is None or np.isfinite(r[k]), (row, k)
        assert 0 <= r["emotion_accuracy"] <= 1
    nf = res["table"]["neutral_face"]
    assert nf["fdd_mm2"] > 0  # the ground truth moves the upper face, the neutral face does not
    assert res["table"]["pipeline"]["diversity_style"] > 0 and res["instruction"] is not None
    out = write_report(res, tmp_path / "rep", FlameModel.standin())
    text = (out / "report.md").read_text()
    assert "| neutral face |" in text and "LSE-D" in text and "not comparable" in text.lower()
    m = json.loads((out / "metrics.json").read_text())
    assert m["clips"] == res["clips"] and "_gen" not in m
    for png in ("per_emotion.png", "curves.png", "frames.png"):
        assert (out / png).is_file(), png
    # the evaluators were cached next to the data
    assert len(list((corpus / "eval_cache").glob("*.safetensors"))) == 2


def test_benchmark_refuses_what_it_cannot_measure(corpus, tmp_path, cli):
    pipe = build_tiny_pipeline()
    with pytest.raises(DatasetError, match="no clips in split 'dev'"):
        run_benchmark(pipe, corpus, split="dev", progress=False)
    info = json.loads((corpus / "dataset.json").read_text())
    bad = tmp_path / "other"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text((corpus / "manifest.jsonl").read_text())
    (bad / "dataset.json").write_text(json.dumps({**info, "flame_model": "flame2023.npz"}))
    with pytest.raises(DatasetError, match="FLAME model"):
        run_benchmark(pipe, bad, progress=False)
    code, _, err = cli("eval", "--data", corpus, "-o", tmp_path / "r", "--inception", tmp_path / "none.pt")
    assert code == 2 and "--inception" in err and "no such file" in err
    code, _, err = cli("eval", "--data", tmp_path, "-o", tmp_path / "r")
    assert code == 2 and "no manifest.jsonl" in err
