"""GRID's layout -> the dataset: alignments, sentence splits, fits by talker (no GRID data needed: a tiny fake)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avitalk.audio import from_array
from avitalk.errors import DatasetError
from avitalk.data.grid import import_grid, read_align, sentence_split
from avitalk.render.video import write_video
from avitalk.types import FlameSequence

from .conftest import tone

ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 at\n35500 41000 f\n41000 47250 two\n" \
        "47250 53000 now\n53000 74500 sil\n"


def test_read_align_drops_silence_and_converts_times(tmp_path):
    p = tmp_path / "bbaf2n.align"
    p.write_text(ALIGN)
    words = read_align(p)
    assert [w for w, _, _ in words] == ["bin", "blue", "at", "f", "two", "now"]
    assert words[0][1:] == (0.95, 1.18)
    p.write_text("0 100\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_align(p)


def test_sentence_split_is_by_sentence():
    texts = [f"bin blue at {c} {d} now" for c in "abcdefghijklmnopqrstuvxyz" for d in ("one", "two", "three", "four")]
    splits = [sentence_split(t) for t in texts]
    assert splits == [sentence_split(t.upper() + "  ") for t in texts]  # the words decide, not case or spacing
    assert set(splits) == {"train", "val", "test"} and splits.count("train") > 0.8 * len(texts)


def test_import_grid_with_fits(tmp_path):
    root = tmp_path / "GRID"
    for talker in ("s1", "s2"):
        (root / talker).mkdir(parents=True)
        (root / "alignments" / talker).mkdir(parents=True)
        for clip in ("bbaf2n", "bgaa1s"):
            frames = np.full((75, 64, 64, 3), 128, np.uint8)
            write_video(root / talker / f"{clip}.mp4", frames, audio=from_array(tone(3.0), 16000))
            if (talker, clip) != ("s2", "bgaa1s"):
                (root / "alignments" / talker / f"{clip}.align").write_text(ALIGN)
            (tmp_path / "fits" / talker).mkdir(parents=True, exist_ok=True)
            FlameSequence.neutral(75).save(tmp_path / "fits" / talker / f"{clip}.npz")
    manifest = import_grid(root, tmp_path / "data", fits=tmp_path / "fits", progress=False)
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["s1_bbaf2n", "s1_bgaa1s", "s2_bbaf2n"]  # talkers share clip names
    r = recs[0]
    assert r["text"] == "bin blue at f two now" and r["words"][0] == ["bin", 0.95, 1.18]
    assert r["emotion"] == "neutral" and r["has_motion"] and r["source"] == "grid"
    assert len({x["split"] for x in recs if x["text"] == r["text"]}) == 1  # one sentence, one split
    rep = json.loads((tmp_path / "data" / "import_report.json").read_text())
    assert rep["skipped"][0]["id"] == "s2_bgaa1s" and "align" in rep["skipped"][0]["reason"]
    with pytest.raises(DatasetError, match="no GRID videos"):
        import_grid(tmp_path / "fits", tmp_path / "d2", fits=tmp_path / "fits", progress=False)
    # fits tracked into one flat folder (not FITS/sN/): one line naming where they go, nothing imported
    flat = tmp_path / "flat"
    flat.mkdir()
    FlameSequence.neutral(75).save(flat / "bbaf2n.npz")
    with pytest.raises(DatasetError, match=r"no folder s1/ of fits .* holds fits directly: move them into .*flat/s1"):
        import_grid(root, tmp_path / "d3", fits=flat, progress=False)
    assert not (tmp_path / "d3" / "manifest.jsonl").exists()


def test_evaluate_tracked_scores_the_tracked_motion_itself_perfectly(tmp_path, monkeypatch):
    """Lip sync against tracked faces: a pipeline that returns the tracked motion gets r = 1, error 0, and the same
    closure as the tracked face; a pipeline that never opens the mouth closes every bilabial and opens no vowel."""
    from avitalk.eval.tracked import evaluate_tracked, tracked_lines, write_tracked_report
    from avitalk.types import FlameSequence

    from .conftest import build_tiny_pipeline

    root = tmp_path / "GRID"
    (root / "s1").mkdir(parents=True)
    (root / "alignments" / "s1").mkdir(parents=True)
    (tmp_path / "fits" / "s1").mkdir(parents=True)
    T = 75
    for n, clip in enumerate(("bbaf2n", "bbaf3s")):
        write_video(root / "s1" / f"{clip}.mp4", np.full((T, 64, 64, 3), 128, np.uint8),
                    audio=from_array(tone(3.0), 16000))
        (root / "alignments" / "s1" / f"{clip}.align").write_text(ALIGN)
        jaw = np.zeros((T, 3), np.float32)
        jaw[:, 0] = 0.15 * np.clip(np.sin(np.arange(T) / (3 + n)), 0, None)  # opens and shuts
        FlameSequence(np.zeros((T, 50), np.float32), jaw).save(tmp_path / "fits" / "s1" / f"{clip}.npz")
    import_grid(root, tmp_path / "data", fits=tmp_path / "fits", test=1.0, val=0.0, progress=False)
    pipe = build_tiny_pipeline()

    def tracked_motion(auds, instrs, seeds=None, **kw):
        recs = sorted((tmp_path / "data" / "flame").glob("*.npz"))
        return [[FlameSequence.load(p)] for p in recs][: len(auds)]

    monkeypatch.setattr(pipe, "synthesize_many", tracked_motion)
    res = evaluate_tracked(pipe, tmp_path / "data", split="test", progress=False)
    assert res["clips"] == 2
    assert res["lip_gap_r"]["median"] == pytest.approx(1.0) and res["lip_vertex_error_mm"]["median"] < 1e-6
    assert res["closure"]["generated"] == res["closure"]["tracked"]
    monkeypatch.setattr(pipe, "synthesize_many", lambda auds, instrs, seeds=None, **kw: [
        [FlameSequence.neutral(T)] for _ in auds])
    shut = evaluate_tracked(pipe, tmp_path / "data", split="test", progress=False)
    assert shut["closure"]["generated"]["bilabial_closure_rate"] == 1.0
    assert shut["closure"]["generated"]["open_vowel_open_rate"] == 0.0
    assert shut["lip_vertex_error_mm"]["median"] > 1.0
    write_tracked_report(res, tmp_path / "report")
    assert "lip-gap correlation" in (tmp_path / "report" / "tracked.md").read_text()
    assert len(tracked_lines(res)) == 6
    res["checkpoint"], res["baseline"] = "ours", {"checkpoint": "shut", **shut}  # side by side (eval --baseline)
    write_tracked_report(res, tmp_path / "report")
    table = (tmp_path / "report" / "tracked.md").read_text().split("Beside the baseline")[1].splitlines()
    ours, base = next(x for x in table if x.startswith("`ours`")), next(x for x in table if x.startswith("`shut`"))
    assert ours.split(" | ")[1] == "1.000" and base.split(" | ")[4] == "100.0%"


def test_import_grid_takes_each_talkers_rest_face_off(tmp_path):
    """The fits' motion in silence (the talker's face at rest) is subtracted; speech movement stays."""
    root = tmp_path / "GRID"
    (root / "s1").mkdir(parents=True)
    (root / "alignments" / "s1").mkdir(parents=True)
    (tmp_path / "fits" / "s1").mkdir(parents=True)
    for k, clip in enumerate(("bbaf2n", "bgaa1s", "lrae3p")):
        write_video(root / "s1" / f"{clip}.mp4", np.full((75, 64, 64, 3), 128, np.uint8),
                    audio=from_array(tone(3.0), 16000))
        (root / "alignments" / "s1" / f"{clip}.align").write_text(ALIGN)
        seq = FlameSequence.neutral(75)
        seq.expression[:, 3] = 0.4 + 0.01 * k  # the talker's face: the same in every frame
        seq.jaw_pose[26:50, 0] = 0.2  # speech: the jaw opens within the words (0.95-2.12 s)
        seq.save(tmp_path / "fits" / "s1" / f"{clip}.npz")
    for rest in (True, False):
        out = tmp_path / f"data-{rest}"
        import_grid(root, out, fits=tmp_path / "fits", progress=False, rest=rest)
        seq = FlameSequence.load(out / "flame" / "s1_bbaf2n.npz")
        assert np.allclose(seq.jaw_pose[30:45, 0], 0.2)  # speech kept either way
        if rest:
            assert np.allclose(seq.expression[:, 3], -0.01, atol=1e-6)  # this clip's rest minus the talker's median
            assert seq.meta["rest_offset"][3] == pytest.approx(0.41)
            assert json.loads((out / "import_report.json").read_text())["rest_offset"]["s1"][3] == pytest.approx(0.41)
        else:
            assert np.allclose(seq.expression[:, 3], 0.4) and "rest_offset" not in seq.meta
