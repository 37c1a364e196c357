import json
import subprocess
import sys

import pytest

from avitalk.flame.standin import demo_sequence
from avitalk.render.video import probe_video


def test_help_on_every_command():
    """Through the installed `avitalk` executable when there is one (`python -m avitalk` otherwise)."""
    import shutil

    exe = [shutil.which("avitalk")] if shutil.which("avitalk") else [sys.executable, "-m", "avitalk"]
    for args in ([], ["head"], ["render"], ["flame"], ["flame", "convert"], ["flame", "info"], ["data"], ["data", "synth"],
                 ["data", "stats"], ["data", "mead"], ["data", "ravdess"], ["data", "say"], ["train"], ["train", "stage2"],
                 ["train", "stage1"], ["run"], ["synthesize"], ["instruct"], ["eval"], ["export"], ["app"]):
        r = subprocess.run([*exe, *args, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "Usage" in r.stdout and not r.stderr.strip(), (args, r.stderr)


def test_usage_mistakes_are_one_error_line_with_exit_2(tmp_path):
    """Through the installed `avitalk` executable: typer raises its bundled click's exceptions, which must not escape."""
    import shutil

    exe = shutil.which("avitalk") or pytest.skip("the avitalk executable is not installed (pip install -e .)")
    o = str(tmp_path / "o")
    for args in (["run", "x.wav"], ["run", "x.wav", "-o", o, "--bogus"], ["nosuchcommand"], ["run"],
                 ["run", "x.wav", "-o", o, "--samples", "abc"], ["run", "x.wav", "-o", o, "--samples", "0"],
                 ["run", "x.wav", "-o", o, "--seed", "xyz"], ["run", "x.wav", "-o", o, "--size", "abc"],
                 ["run", "x.wav", "-o", o, "--max-duration", "abc"], ["data", "nosuch"], ["train", "stage9"]):
        r = subprocess.run([exe, *args], capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_out_folder_never_loses_a_file(tmp_path, wav_file):
    """Through the executable: an uncreatable OUT is one error line; --overwrite replaces avitalk's own outputs (and
    removes the ones the previous run wrote that this run does not), keeps everything else; a failed run leaves no
    OUT behind; --max-duration is a usage limit with a hint."""
    import shutil

    exe = shutil.which("avitalk") or pytest.skip("the avitalk executable is not installed (pip install -e .)")
    wav = wav_file("speech.wav", seconds=1.0)

    def run(*args, quiet=True):
        r = subprocess.run([exe, "run", str(wav), "--no-render", *["-q"] * quiet, *map(str, args)], capture_output=True,
                           text=True)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    if sys.platform.startswith("linux"):
        r = run("-o", "/proc/avitalk-out")
        assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: /proc/avitalk-out: cannot write there "
                                                                        "(No such file or directory)"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run("-o", out)
    assert r.returncode == 2 and "not empty" in r.stderr and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert run("-o", out, "--overwrite", "--samples", "2").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["flame_0.npz", "flame_1.npz", "instruction.txt", "keep.txt", "run.json"]
    r = run("-o", out, "--overwrite", quiet=False)
    assert r.returncode == 0 and "keep.txt" in r.stderr  # it says what it kept
    assert sorted(p.name for p in out.iterdir()) == ["flame.npz", "instruction.txt", "keep.txt", "run.json"]
    assert (out / "keep.txt").read_text() == "mine"
    # a file of the user's with an output's name is never replaced, --overwrite or not: refused before any model work
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "flame.npz").write_bytes(b"my own motion")
    r = run("-o", mine, "--overwrite")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {mine / 'flame.npz'}: a file avitalk did not write is in the way (the previous run.json does not list "
        "it); move it, or choose another OUT"]
    assert (mine / "flame.npz").read_bytes() == b"my own motion" and sorted(p.name for p in mine.iterdir()) == ["flame.npz"]
    (mine / "run.json").write_text("{}")  # a run.json that is not avitalk's does not make the file avitalk's
    assert run("-o", mine, "--overwrite").returncode == 2 and (mine / "flame.npz").read_bytes() == b"my own motion"
    r = run("-o", tmp_path / "new" / "deeper", "--max-duration", "0.5")
    assert r.returncode == 2 and "--max-duration" in r.stderr and not (tmp_path / "new").exists()
    r = run("-o", tmp_path / "new2", "--checkpoint", tmp_path / "nowhere")
    assert r.returncode == 2 and "no such checkpoint" in r.stderr and not (tmp_path / "new2").exists()


def test_head_writes_model_and_sheet(tmp_path, cli):
    code, out, err = cli("head", "--out", tmp_path / "h", "--size", "96")
    assert code == 0, err
    from PIL import Image

    img = Image.open(tmp_path / "h" / "standin_sheet.png")
    assert img.size[0] == 3 * 96 and img.size[1] > 2 * 96
    code, out, _ = cli("flame", "info", tmp_path / "h" / "standin.npz", "--json")
    assert code == 0 and '"n_exp": 50' in out


def test_render_end_to_end(tmp_path, cli, wav_file):
    flame = demo_sequence(1.2).save(tmp_path / "seq.npz")
    wav = wav_file("speech.wav", seconds=1.2)
    out = tmp_path / "face.mp4"
    code, stdout, err = cli("render", flame, "--audio", wav, "-o", out, "--size", "128", "-q")
    assert code == 0, err
    info = probe_video(out)
    assert info["frames"] == 30 and info["duration"] == pytest.approx(1.2) and info["audio_codec"] == "aac"
    last = info["last_frame"]
    assert last.shape == (128, 128, 3) and last.std() > 10
    # an existing output is refused unless --overwrite
    code, _, err = cli("render", flame, "-o", out, "--size", "128")
    assert code == 2 and "already exists" in err
    assert cli("render", flame, "-o", out, "--size", "128", "--overwrite", "-q")[0] == 0


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["render", t / "missing.npz", "-o", t / "o.mp4"], "missing.npz: no such file"),
        (lambda t: ["render", t / "seq.npz", "-o", t / "o.mp4", "--audio", t / "nope.wav"], "nope.wav: no such file"),
        (lambda t: ["render", t / "seq.npz", "-o", t / "o.mp4", "--size", "33"], "even number"),
        (lambda t: ["render", t / "seq.npz", "-o", t / "o.mp4", "--flame-model", t / "m.pkl"], "converted first"),
        (lambda t: ["flame", "convert", t / "seq.npz", t / "o.npz"], "not a readable FLAME pickle"),
        (lambda t: ["flame", "info", t / "none.npz"], "no such file"),
    ],
)
def test_bad_input_one_line_and_nonzero(tmp_path, cli, make_args, message):
    demo_sequence(0.4).save(tmp_path / "seq.npz")
    (tmp_path / "m.pkl").write_bytes(b"x")
    code, out, err = cli(*make_args(tmp_path))
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.npz").exists()


def test_data_synth_and_stats(tmp_path, cli):
    code, out, err = cli("data", "synth", "--out", tmp_path / "st", "--clips", "10", "--workers", "1", "-q")
    assert code == 0, err
    assert "10 clips" in out and (tmp_path / "st" / "manifest.jsonl").is_file()
    code, out, err = cli("data", "stats", tmp_path / "st")
    assert code == 0, err
    assert out.startswith("10 clips") and "emotion:" in out and (tmp_path / "st" / "stats.png").is_file()
    code, _, err = cli("data", "stats", tmp_path / "nothing")
    assert code == 2 and "no manifest.jsonl" in err


def test_train_stage2_bad_input(tmp_path, cli):
    code, _, err = cli("train", "stage2", "--data", tmp_path, "--out", tmp_path / "o", "--phase", "both")
    assert code == 2 and "--phase must be" in err
    code, _, err = cli("train", "stage2", "--config", tmp_path / "none.yaml", "--data", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "no such config file" in err
    code, _, err = cli("train", "stage2", "--data", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "no manifest.jsonl" in err
    code, _, err = cli("train", "stage2", "--data", tmp_path, "--out", tmp_path / "o", "--event-data", tmp_path / "x")
    assert code == 2 and "--event-data" in err and "no manifest.jsonl" in err and "Traceback" not in err


def test_data_say_speaks_with_an_emotion(tmp_path, cli):
    from avitalk import audio
    from avitalk.types import FlameSequence

    code, out, err = cli("data", "say", "I will see you at the station tomorrow.", "-o", tmp_path / "s.wav",
                         "--emotion", "sad", "--intensity", "2")
    assert code == 0, err
    a = audio.load(tmp_path / "s.wav")
    seq = FlameSequence.load(tmp_path / "s.flame.npz")
    assert abs(seq.num_frames - a.num_frames()) <= 1
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["emotion"] == "sad" and rec["intensity"] == 2 and "reference instruction" in out
    code, _, err = cli("data", "say", "Hello there.", "-o", tmp_path / "x.wav", "--emotion", "bored")
    assert code == 2 and "unknown emotion" in err
    code, _, err = cli("data", "say", "Hello there.", "-o", tmp_path / "s.wav")
    assert code == 2 and "already exists" in err


def test_version_and_bare_commands_print_help_without_an_empty_error(cli):
    from avitalk import __version__

    code, out, err = cli("--version")
    assert code == 0 and out.strip() == f"avitalk {__version__}"
    for args in ((), ("data",), ("train",)):
        code, out, err = cli(*args)
        assert code == 0 and "Usage" in out + err and "error" not in err, (args, err)


def test_an_instruction_stage2_cannot_read_gets_one_warning_and_vocab_lists_the_words(cli, tmp_path, wav_file):
    wav = wav_file("speech.wav", seconds=1.0)
    for text, warned in (("A bored person speaks.", True), ("\U0001F600\U0001F600", True),
                         ("A furious person speaks.", False), ("A person speaks with brow strongly lowered.", False)):
        code, out, err = cli("synthesize", wav, "-o", tmp_path / f"o{len(text)}", "-i", text, "--no-render")
        assert code == 0, err
        lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        assert len(lines) == int(warned), (text, err)
        if warned:
            assert "avitalk vocab" in lines[0] and "angry" in lines[0]
    code, out, err = cli("vocab")
    assert code == 0 and "furious" in out and "brow: lowered, furrowed" in out and "strongly" in out


def test_help_fits_80_columns_without_placeholders_and_one_name_per_idea(monkeypatch):
    """Every command's --help at 80 columns: no line wider, flags without a <bool> placeholder; -o/--out and
    -n/--samples mean the same everywhere, the old names (--output, -k) still accepted."""
    from avitalk.top.cli import _new_names

    monkeypatch.setenv("COLUMNS", "80")
    exe = [sys.executable, "-m", "avitalk"]
    for cmd in (["run"], ["synthesize"], ["instruct"], ["export"], ["render"], ["app"], ["eval"], ["data", "speech"]):
        r = subprocess.run([*exe, *cmd, "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert max(len(line) for line in r.stdout.splitlines()) <= 80, cmd
        assert "<bool>" not in r.stdout and "╭" not in r.stdout, cmd
        if cmd in (["run"], ["export"], ["render"]):
            assert "-o, --out" in r.stdout, cmd
        if cmd in (["run"], ["instruct"]):
            assert "-n, --samples" in r.stdout, cmd
    assert _new_names(["export", "f.npz", "--output", "x.glb"]) == ["export", "f.npz", "--out", "x.glb"]
    assert _new_names(["instruct", "a.wav", "-k", "3", "--output=x"]) == ["instruct", "a.wav", "-n", "3", "--out=x"]
