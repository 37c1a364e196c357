"""The shape of the code: imports flow one way (no circles), the stages never import each other, only training code
imports stage 1's trainer, and time bases are named constants, never numbers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the import name it installs as (pyproject.toml's package-dir): one installed name, avitalk
PACKAGES = {"avitalk": "avitalk", "stage1_instruct": "avitalk.stage1_instruct",
            "stage2_synthesis": "avitalk.stage2_synthesis", "eval": "avitalk.eval"}
S1, S2, EVAL = PACKAGES["stage1_instruct"], PACKAGES["stage2_synthesis"], PACKAGES["eval"]


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, name in PACKAGES.items():
        for p in (ROOT / folder).rglob("*.py"):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([name, *parts])] = p
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file, lazy imports included)."""
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if is_pkg else m.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m:
                    graph[m].add(n)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# the pipeline, CLI and app (and `python -m avitalk`); the benchmark, which measures the composed pipeline
TOP = ("avitalk.top", "avitalk.__main__", EVAL)


def layer(m: str) -> str:
    if m.startswith(TOP):
        return "top"
    if m.startswith((S1, S2)):
        return "stage"
    return "ground"  # the rest of avitalk: errors, types, config, io, audio, encoders, lean, flame, render, data, ...


def test_imports_run_downward_only_and_the_stages_stay_apart():
    """ground <- stages <- top (ARCHITECTURE.md): no import from a lower layer to a higher one, no circle, and the two
    stages never import each other."""
    graph = _imports(_modules())
    assert _cycles(graph) == []
    rank = {"ground": 0, "stage": 1, "top": 2}
    up = [f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph.items() for d in deps
          if rank[layer(d)] > rank[layer(m)]]
    assert not up, "\n".join(up)
    for m, deps in graph.items():
        if m.startswith(S1):
            assert not any(d.startswith(S2) for d in deps), m
        if m.startswith(S2):
            assert not any(d.startswith(S1) for d in deps), m
    assert {layer(m) for m in graph} == {"ground", "stage", "top"}
    assert layer("avitalk.top.pipeline") == layer("avitalk.top.cli.run") == layer("avitalk.top.app") == "top"


def test_the_ground_loads_without_the_layers_above():
    """``import avitalk`` (and its ground modules) imports neither stage, nor the benchmark, nor the top layer; the
    package's ``avitalk.AVITalkingPipeline`` is imported when first asked for."""
    import subprocess
    import sys

    code = ("import sys, avitalk, avitalk.types, avitalk.config, avitalk.io, avitalk.audio, avitalk.vocab; "
            "bad = [m for m in sys.modules if m.startswith(('avitalk.top', 'avitalk.stage', 'avitalk.eval'))]; "
            "assert not bad, bad; P = avitalk.AVITalkingPipeline; assert 'avitalk.top.pipeline' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_only_training_code_imports_the_stage1_trainer():
    graph = _imports(_modules())
    importers = sorted(m for m, deps in graph.items() if f"{S1}.train" in deps)
    assert importers == ["avitalk.top.cli.train"]  # its `train stage1` command; inference goes through the Instructor
    for p in list((ROOT / "benchmarks").glob("*.py")):
        assert "stage1_instruct.train" not in p.read_text(), p.name


_TIME_LITERALS = [
    (re.compile(r"\b16_?000\b|\b160_?000\b"), "a sample rate or a number of samples"),
    (re.compile(r"(?=.*(?:sec|duration|fps|frame|feat|samples|rate|_s\b))(?:.*(?:[*/]|//)\s*(?:25|50)(?:\.0)?\b)"),
     "a frame or feature rate"),
    (re.compile(r"\b1500\s*//"), "30 s of features"),
    (re.compile(r"fps: float = 25"), "the motion frame rate"),
]


def test_time_bases_are_named_constants():
    """16 kHz, 50 Hz and 25 fps are SAMPLE_RATE, FEATURE_RATE and MOTION_FPS (avitalk/types.py) in code; tests,
    comments and docstrings may say the numbers."""
    bad = []
    for pkg in (*PACKAGES, "benchmarks", "scripts"):
        for p in (ROOT / pkg).rglob("*.py"):
            if p.relative_to(ROOT).as_posix() == "avitalk/types.py":
                continue
            tree = ast.parse(p.read_text())
            doc_lines = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    doc_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            for n, line in enumerate(p.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if n in doc_lines or not code.strip():
                    continue
                for rx, what in _TIME_LITERALS:
                    if rx.search(code):
                        bad.append(f"{p.relative_to(ROOT)}:{n}: {what}: {line.strip()}")
    assert not bad, "\n".join(bad)
