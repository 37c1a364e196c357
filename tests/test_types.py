import json
import os

import numpy as np
import pytest

from avitalk.errors import AudioError, InstructionError, SequenceError
from avitalk.io import atomic_path, atomic_write_json
from avitalk.types import MAX_INSTRUCTION_CHARS, Audio, FlameSequence, Instruction


def make_seq(T=10, n=50):
    rng = np.random.default_rng(0)
    return FlameSequence(rng.normal(size=(T, n)), rng.normal(size=(T, 3)) * 0.1, fps=25, meta={"seed": 3})


def test_flame_sequence_roundtrip(tmp_path):
    seq = make_seq()
    seq.global_pose = np.zeros((10, 3), np.float32)
    seq.save(tmp_path / "a.npz")
    back = FlameSequence.load(tmp_path / "a.npz")
    assert back.expression.dtype == np.float32 and back.expression.shape == (10, 50)
    np.testing.assert_allclose(back.expression, seq.expression)
    np.testing.assert_allclose(back.jaw_pose, seq.jaw_pose)
    assert back.fps == 25.0 and back.meta == {"seed": 3} and back.global_pose.shape == (10, 3)
    assert back.duration == pytest.approx(0.4)
    np.testing.assert_allclose(FlameSequence.from_motion(seq.motion()).jaw_pose, seq.jaw_pose)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(expression=np.zeros((5, 50)), jaw_pose=np.zeros((4, 3))), "jaw_pose: expected shape"),
        (dict(expression=np.zeros((5,)), jaw_pose=np.zeros((5, 3))), "expression: expected 2"),
        (dict(expression=np.full((5, 50), np.nan), jaw_pose=np.zeros((5, 3))), "NaN"),
        (dict(expression=np.zeros((0, 50)), jaw_pose=np.zeros((0, 3))), "at least one frame"),
        (dict(expression=np.zeros((5, 50)), jaw_pose=np.zeros((5, 3)), fps=0), "fps"),
        (dict(expression=np.array([["a"] * 50] * 5), jaw_pose=np.zeros((5, 3))), "dtype"),
    ],
)
def test_flame_sequence_validation(kwargs, match):
    with pytest.raises(SequenceError, match=match):
        FlameSequence(**kwargs)


def test_flame_sequence_load_errors(tmp_path):
    with pytest.raises(SequenceError, match="no such file"):
        FlameSequence.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(SequenceError, match="not a FLAME motion file"):
        FlameSequence.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", expression=np.zeros((3, 50)))
    with pytest.raises(SequenceError, match="missing key.*jaw_pose"):
        FlameSequence.load(tmp_path / "partial.npz")
    np.savez(tmp_path / "nan.npz", expression=np.full((3, 50), np.inf), jaw_pose=np.zeros((3, 3)))
    with pytest.raises(SequenceError, match="nan.npz: expression: contains NaN"):
        FlameSequence.load(tmp_path / "nan.npz")
    # object arrays (pickles) are never loaded
    np.savez(tmp_path / "obj.npz", expression=np.array([object()] * 3), jaw_pose=np.zeros((3, 3)))
    with pytest.raises(SequenceError):
        FlameSequence.load(tmp_path / "obj.npz")


def test_instruction_rules():
    ins = Instruction("  A happy   person speaks.\n")
    assert ins.text == "A happy person speaks."
    with pytest.raises(InstructionError, match="empty"):
        Instruction("   ")
    with pytest.raises(InstructionError, match="limit is 512"):
        Instruction("word " * 2000)
    cut = Instruction.from_text("word " * 2000, truncate=True)
    assert len(cut.text) <= MAX_INSTRUCTION_CHARS and cut.text.endswith("word")
    with pytest.raises(InstructionError, match="must be text"):
        Instruction(42)  # type: ignore[arg-type]
    assert Instruction("x", emotion="happy", actions=[("brow", "raised")]).to_dict()["actions"] == [["brow", "raised"]]


def test_audio_type_validation():
    a = Audio(np.zeros(1600, np.float64) + 0.1)
    assert a.samples.dtype == np.float32 and a.duration == pytest.approx(0.1)
    assert Audio(np.full(16000, 0.1, np.float32)).num_frames() == 25
    assert Audio(np.full(1920, 0.1, np.float32)).num_frames() == 3  # 0.12 s
    with pytest.raises(AudioError, match="mono"):
        Audio(np.zeros((10, 2), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        Audio(np.array([0.0, np.nan], np.float32))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o600)


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    from avitalk.io import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "b.txt").write_text("half")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder is intact
    with atomic_dir(target) as d:
        (d / "c.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_motion_files_that_are_not_npz_are_refused_in_avitalks_words(tmp_path, cli):
    """A text file, a bare .npy and an .npz of Python objects: one error line each, no numpy advice to unpickle."""
    import numpy as np

    (tmp_path / "a.txt").write_text("hello")
    np.save(tmp_path / "b.npy", np.zeros(3))
    np.savez(tmp_path / "c.npz", expression=np.array([{"a": 1}], dtype=object), jaw_pose=np.zeros((1, 3)))
    for name, says in (("a.txt", "not a FLAME motion file"), ("b.npy", "not a FLAME motion file"),
                       ("c.npz", "holds Python objects, which avitalk never loads")):
        code, out, err = cli("export", tmp_path / name, "-o", tmp_path / "x.glb")
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
        assert "allow_pickle" not in err and "Traceback" not in err
