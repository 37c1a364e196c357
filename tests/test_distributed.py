"""Training on several processes (2 CPU processes joined over gloo by torchrun, as `accelerate launch` or torchrun
would run them on GPUs): each process trains on its own clips, two processes at batch B follow one process at batch
2B, one checkpoint is written, and an interrupted run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from .conftest import tiny_stage1_cfg, tiny_stage2_cfg

pytestmark = pytest.mark.slow


def _train(tmp_path, out: str, nproc: int, *sets: str, resume: bool = False, env: dict | None = None,
           stage: str = "stage2", launcher: list[str] | None = None):
    launcher = launcher or ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc)] if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "avitalk", "train", stage, "--config", str(tmp_path / "cfg.yaml"), "--data",
           str(tmp_path / "d"), "--out", str(tmp_path / out), "-q", *(["--resume"] if resume else [])]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_accelerate_launch_starts_two_cpu_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs: two gloo processes (accelerate's
    MULTI_CPU) that train on different clips and write one checkpoint (`--cpu` would start one process: accelerate
    runs several CPU processes with --cpu only through MPI)."""
    import shutil

    from avitalk.data.synthtalk import generate

    acc = shutil.which("accelerate")
    if acc is None:
        pytest.skip("the accelerate command is not on PATH")
    generate(tmp_path / "d", 12, seed=6, workers=1, progress=False)
    cfg = tiny_stage2_cfg()
    cfg.stage2.train.lipsync.update(steps=12, batch_size=4, warmup=2)
    cfg.stage2.train.prior.update(steps=12, batch_size=8, warmup=2)
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    r = _train(tmp_path, "acc", 2, launcher=[acc, "launch", "--multi_gpu", "--num_processes", "2",
                                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"])
    assert r.returncode == 0, r.stderr[-3000:]
    h = json.loads((tmp_path / "acc" / "history.json").read_text())
    for phase in ("lipsync", "prior"):
        assert all(len(rec["clips_by_rank"]) == 2 and rec["clips_by_rank"][0] != rec["clips_by_rank"][1]
                   for rec in h[phase])
    assert (tmp_path / "acc" / "decoder.safetensors").is_file()


def test_stage2_on_two_processes(tmp_path):
    from avitalk.data.synthtalk import generate

    generate(tmp_path / "d", 16, seed=5, workers=1, progress=False)
    cfg = tiny_stage2_cfg()
    cfg.stage2.train.lipsync.update(steps=30, batch_size=4, warmup=2)
    cfg.stage2.train.prior.update(steps=30, batch_size=8, warmup=2)
    cfg.stage2.train.checkpoint_every = 10
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")

    one = _train(tmp_path, "one", 1, "stage2.train.lipsync.batch_size=8", "stage2.train.prior.batch_size=16")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(tmp_path, "two", 2)  # 4 per process: 8 in all
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    for phase in ("lipsync", "prior"):
        # each process draws its own clips
        for rec in h2[phase]:
            a, b = rec["clips_by_rank"]
            assert a != b, (phase, rec["step"])
        assert all(len(rec["clips_by_rank"]) == 1 for rec in h1[phase])
        # two processes at batch B learn like one at 2B: the same steps logged, the loss down alike (to within 30%)
        assert [r["step"] for r in h1[phase]] == [r["step"] for r in h2[phase]]
        l1, l2 = h1[phase][-1]["loss"], h2[phase][-1]["loss"]
        assert l2 < h2[phase][0]["loss"] and abs(l2 - l1) <= 0.3 * l1, (phase, l1, l2)
    # one checkpoint, written once, that loads and synthesizes
    names = sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith("."))
    assert [n for n in names if n.endswith(".safetensors")] == ["decoder.safetensors", "prior.safetensors",
                                                               "style_encoder.safetensors"]
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    synth = Synthesizer.load(tmp_path / "two")
    seq = synth.synthesize(np.random.default_rng(0).normal(size=(60, 32)).astype(np.float32), "A happy person speaks.",
                           seed=0)[0]
    assert seq.num_frames == 30 and np.isfinite(seq.expression).all()

    # interrupted after the prior's checkpoint at step 20, then resumed: the same as the uninterrupted run
    stopped = _train(tmp_path, "again", 2, env={"AVITALK_TRAIN_STOP_AT": "prior:20"})
    assert stopped.returncode != 0 and "prior" in json.loads((tmp_path / "again" / "history.json").read_text())
    assert json.loads((tmp_path / "again" / "history.json").read_text())["prior"][-1]["step"] < 29
    resumed = _train(tmp_path, "again", 2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    h3 = json.loads((tmp_path / "again" / "history.json").read_text())
    for a, b in zip(h2["prior"], h3["prior"]):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    import safetensors.numpy as stn

    for f in ("prior", "decoder"):
        x, y = stn.load_file(str(tmp_path / "two" / f"{f}.safetensors")), stn.load_file(str(tmp_path / "again" / f"{f}.safetensors"))
        assert all(np.allclose(x[k], y[k], atol=1e-6) for k in x), f


def test_stage1_on_two_processes(tmp_path):
    from avitalk.data.synthtalk import generate
    from avitalk.stage1_instruct.instructor import Instructor

    generate(tmp_path / "d", 12, seed=3, workers=1, progress=False)
    cfg = tiny_stage1_cfg()
    cfg.stage1.train.update(steps=6, batch_size=2, qformer_warmup_steps=4, qformer_warmup_batch_size=4,
                            checkpoint_every=3, aux_weight=1.0)
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    r = _train(tmp_path, "s1", 2, stage="stage1")
    assert r.returncode == 0, r.stderr[-3000:]
    h = json.loads((tmp_path / "s1" / "history.json").read_text())
    for phase in ("qformer_warmup", "adapter"):
        assert h[phase] and all(rec["clips_by_rank"][0] != rec["clips_by_rank"][1] for rec in h[phase]), phase
        assert all(np.isfinite(rec["loss"]) for rec in h[phase])
    assert json.loads((tmp_path / "s1" / "train_info.json").read_text())["processes"] == 2
    ins = Instructor.load(tmp_path / "s1")
    import torch

    text = ins.generate(torch.randn(1, 60, 32), None, max_new_tokens=8)[0][0]
    assert isinstance(text, str)


def test_gpu_benchmark_runs_on_the_cpu_at_small_sizes(tmp_path):
    """`make bench-gpu`'s script, on the CPU with tiny shapes: every section is measured and written."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--small", "--out",
                        str(tmp_path / "gpu.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert res["equivalence"]["same_instruction"] and res["equivalence"]["motion_max_abs_diff"] == 0.0
    assert res["latency"]["stage1"]["tokens_per_s"] > 0 and res["latency"]["stage2_s"]["10s_ddim5"] > 0
    b = res["latency"]["batched"]  # batched evaluation gives what clip-by-clip gives
    assert b["same_instructions"] == b["clips"] == 8 and b["motion_max_diff"] < 1e-4
    t = res["training"]["tiny"]
    assert t["lipsync_s_per_step"] > 0 and t["prior_s_per_step"] > 0 and t["stage1_s_per_step"] > 0
    assert "train tiny:" in r.stdout
