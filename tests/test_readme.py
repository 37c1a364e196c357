"""The README's quick start runs as written: every command of its bash blocks, in order, in an empty folder; and what
it shows `make demo` printing is what `make demo` prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> tuple[list[str], list[str]]:
    """The quick start's shell commands (comments dropped) and the lines of the output it shows."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands, shown = [], []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", section, re.S):
        for line in body.splitlines():
            if lang == "bash":
                cmd = line.split("  #", 1)[0].strip()
                if cmd:
                    commands.append(cmd)
            else:
                shown.append(line)
    return commands, shown


def test_the_quick_start_block_is_what_it_should_be():
    commands, shown = quick_start()
    assert commands[0] == "make demo" and any(c.startswith("sed -i") for c in commands)
    assert any(line.startswith("instruction (stage1): ") for line in shown)


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path):
    exe = shutil.which("avitalk") or pytest.skip("the avitalk executable is not installed (make setup)")
    commands, shown = quick_start()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = ""
    for cmd in commands:
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
        printed += r.stdout + r.stderr
    for key in ("instruction (stage1): ", "heard: "):
        want = next(line for line in shown if line.startswith(key))
        assert want in printed.splitlines(), (want, printed[-2000:])
    edited = (tmp_path / "out" / "run1" / "instruction.txt").read_text()
    assert (tmp_path / "out" / "run2" / "instruction.txt").read_text() == edited  # the edited text made run2
    assert sorted(p.name for p in (tmp_path / "out" / "run3").iterdir() if p.suffix == ".mp4") == \
        ["video_0.mp4", "video_1.mp4", "video_2.mp4"]
