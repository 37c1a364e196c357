"""`avitalk eval` / eval.benchmark on a tiny random pipeline and a small SynthTalk corpus."""

import json

import numpy as np
import pytest

from avitalk.errors import CheckpointError, DatasetError
from avitalk.eval.benchmark import ROWS, run_benchmark, write_report

from .conftest import build_tiny_pipeline


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from avitalk.data.synthtalk import generate

    return generate(tmp_path_factory.mktemp("bench") / "d", 16, seed=4, workers=1, progress=False).parent


@pytest.mark.slow
def test_benchmark_report_has_every_row_and_column(corpus, tmp_path):
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel

    import torch

    from avitalk.eval.syncnet import SyncNet

    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet_v2.model")  # SyncNet's layout, random weights
    pipe = build_tiny_pipeline()
    split = "test" if read_manifest(corpus, "test") else "train"
    run = run_benchmark(pipe, corpus, split=split, samples=3, diversity_clips=2, progress=False,
                        evaluator_steps=(10, 10), limit=2, syncnet=str(tmp_path / "syncnet_v2.model"))
    res = run.result
    assert set(run.generated) == set(ROWS) and len(run.ground_truth) == res["clips"]
    assert set(res["table"]) == set(ROWS)
    for row, r in res["table"].items():
        for k in ("fid", "lse_d", "lse_c", "lve_squared_max_mm2", "lve_euclidean_max_mm", "mve_mm", "fdd_mm2",
                  "emotion_accuracy"):
            assert r[k] is None or np.isfinite(r[k]), (row, k)
        assert 0 <= r["emotion_accuracy"] <= 1
        assert np.isfinite(r["lse_d_syncnet"]) and r["lse_c_syncnet"] >= 0, row
    sn = res["syncnet"]
    assert sn["crop"] == "face" and np.isfinite(sn["ground_truth"]["lse_d"]) and sn["frames_per_s"] > 0
    assert sn["frames"] == sum(len(g) for g in run.ground_truth) * (1 + len(ROWS))
    nf = res["table"]["neutral_face"]
    assert nf["fdd_mm2"] > 0  # the ground truth moves the upper face, the neutral face does not
    assert res["table"]["pipeline"]["diversity_style"] > 0 and res["instruction"] is not None
    out = write_report(run, tmp_path / "rep", FlameModel.standin())
    text = (out / "report.md").read_text()
    assert "| neutral face |" in text and "LSE-D SyncNet" in text and "not comparable" in text.lower()
    assert "ground-truth motion LSE-D" in text
    # the report says what KID's numbers are, what each row and column measures, and the prior-vs-mapper trade-off
    assert "KID (± std)" in text and "can be negative" in text and "50 random subsets" in text
    assert "Rows:" in text and "**FID**" in text and "Trade-off, with the reference instruction:" in text
    fid_p, fid_m = res["table"]["pipeline_gt_instruction"]["fid"], res["table"]["no_prior"]["fid"]
    assert f"the deterministic mapper {fid_m:.2f}, the diffusion prior {fid_p:.2f}" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["clips"] == res["clips"] and m["table"].keys() == res["table"].keys()
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
    (tmp_path / "junk.model").write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="junk.model: not a PyTorch weights file"):
        run_benchmark(pipe, corpus, syncnet=str(tmp_path / "junk.model"), progress=False)
    code, _, err = cli("eval", "--data", corpus, "-o", tmp_path / "r", "--syncnet-crop", "eyes")
    assert code == 2 and "--syncnet-crop" in err
    code, _, err = cli("eval", "--data", tmp_path, "-o", tmp_path / "r")
    assert code == 2 and "no manifest.jsonl" in err


@pytest.mark.slow
def test_benchmark_spread_over_two_processes_matches_one(corpus, tmp_path):
    """`torchrun --nproc_per_node 2 -m avitalk eval` deals the clips over two CPU processes (gloo) and gathers
    them; the report must equal the single-process one."""
    import os
    import subprocess
    import sys

    from avitalk.data.manifest import read_manifest
    from avitalk.top.pipeline import AVITalkingPipeline

    build_tiny_pipeline().save_pretrained(tmp_path / "ck", dtype="float32")
    pipe = AVITalkingPipeline.from_pretrained(tmp_path / "ck")
    split = "test" if len(read_manifest(corpus, "test")) >= 3 else "train"
    one = run_benchmark(pipe, corpus, split=split, samples=3, limit=5, progress=False, evaluator_steps=(10, 10)).result
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "avitalk", "eval", "--checkpoint", str(tmp_path / "ck"), "--data", str(corpus),
                           "--split", split, "--limit", "5", "--samples", "3", "-o", str(tmp_path / "rep"), "-q"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2 and two["clips"] == one["clips"]
    for row, r in one["table"].items():
        for k, v in r.items():
            if k != "kid_std" and v is not None:  # KID's spread over subsets is float noise at these magnitudes
                assert two["table"][row][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (row, k)
    assert two["instruction"] == pytest.approx(one["instruction"])


def test_end_to_end_check_reads_the_emotion_back(corpus):
    from avitalk.eval.end_to_end import evaluate_end_to_end

    pipe = build_tiny_pipeline()
    res = evaluate_end_to_end(pipe, corpus, split="train", limit=3, progress=False, evaluator_steps=(10, 10))
    assert res["clips"] == 3 and res["chance"] == 0.125
    for k in ("emotion_accuracy_end_to_end", "emotion_accuracy_stage2_reference_instruction", "stage1_emotion_accuracy"):
        assert 0 <= res[k] <= 1 and res[k] * 3 == pytest.approx(round(res[k] * 3)), k  # a fraction of 3 clips
