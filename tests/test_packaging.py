"""A normal install: the wheel, installed into a fresh virtual environment, runs `avitalk run` from any folder, and
installs one import name (avitalk; nothing named eval)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from avitalk.audio import save_wav
from avitalk.types import Audio

from .conftest import speechlike

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-w", str(dist), "-q"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(dist.glob("avitalk-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"avitalk"}, tops  # one installed import name
    for need in ("avitalk/prompts/vocabulary.yaml", "avitalk/prompts/stage1.yaml", "avitalk/configs/tiny.yaml",
                 "avitalk/checkpoints/default/config.yaml", "avitalk/checkpoints/default/reader.safetensors",
                 "avitalk/checkpoints/default/decoder_stream.safetensors",
                 "avitalk/stage1_instruct/reader.py", "avitalk/stage2_synthesis/synthesizer.py",
                 "avitalk/eval/real_speech.py"):
        assert need in names, need

    env = tmp_path / "venv"  # reuses the installed dependencies; the wheel itself goes into the venv
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    py = env / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    save_wav(work / "clip.wav", Audio(speechlike(2.0)))
    code = ("import sys, avitalk, avitalk.eval.real_speech as e; from avitalk.top.cli import main; "
            "print(avitalk.__file__); sys.exit(main(['run', 'clip.wav', '-o', 'out', '--no-render', '--quiet']))")
    res = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(env) in res.stdout  # the wheel's copy, not the repository's
    assert sorted(p.name for p in (work / "out").iterdir()) == ["flame.npz", "instruction.txt", "run.json"]
    assert json.loads((work / "out" / "run.json").read_text())["instruction"]["text"]
    res = subprocess.run([str(py), "-c", "import eval"], cwd=work, capture_output=True, text=True)
    assert res.returncode != 0 and "No module named 'eval'" in res.stderr
    res = subprocess.run([str(py), "-c", "from avitalk.config import load_config; print(load_config('tiny').name)"],
                         cwd=work, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "tiny", res.stderr
