import json

import numpy as np
import pytest
import soundfile as sf

from avitalk.data.manifest import read_manifest
from avitalk.data.real import import_mead, import_ravdess, load_fit, parse_mead_clip, parse_ravdess_name
from avitalk.errors import DatasetError
from avitalk.types import FlameSequence

from .conftest import tone, write_m4a


def _wav(path, seconds=1.2, sr=48000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr), sr)


def _fit(path, seconds=1.2, fps=25.0, emoca=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    T = int(round(seconds * fps))
    rng = np.random.default_rng(len(str(path)))
    if emoca:  # EMOCA-style keys: exp [T, 50], pose [T, 6] (global + jaw)
        np.savez(path, exp=rng.normal(size=(T, 50)).astype(np.float32), pose=rng.normal(0, 0.1, (T, 6)).astype(np.float32), fps=fps)
    else:
        FlameSequence(rng.normal(size=(T, 50)), rng.normal(0, 0.1, (T, 3)), fps=fps).save(path)


def test_name_parsers():
    f = parse_ravdess_name("03-01-06-02-01-02-13")
    assert f == {"modality": "audio-only", "channel": "speech", "emotion": "fear", "intensity": 3, "statement": "01",
                 "repetition": 2, "actor": 13, "gender": "male"}
    assert parse_ravdess_name("03-01-02-01-01-01-02")["emotion"] == "neutral"  # calm
    assert parse_ravdess_name("not-a-name") is None
    assert parse_mead_clip("M012_front_neutral_level1_017") == {
        "speaker": "M012", "view": "front", "emotion": "neutral", "intensity": 1, "number": "017", "gender": "male"}
    assert parse_mead_clip("W015_front_bored_level2_001") is None


def test_load_fit_formats_and_resampling(tmp_path):
    _fit(tmp_path / "a.npz")
    assert load_fit(tmp_path / "a.npz").num_frames == 30
    _fit(tmp_path / "b.npz", fps=30.0, emoca=True)  # 36 frames at 30 fps -> 30 at 25 fps
    s = load_fit(tmp_path / "b.npz")
    assert s.fps == 25 and s.num_frames == 30 and s.jaw_pose.shape == (30, 3)
    np.savez(tmp_path / "c.npz", exp=np.zeros((5, 50)))
    with pytest.raises(DatasetError, match="no jaw pose"):
        load_fit(tmp_path / "c.npz")


@pytest.fixture
def ravdess_tree(tmp_path):
    root, fits, of = tmp_path / "RAVDESS", tmp_path / "fits", tmp_path / "openface"
    names = {
        "01": ["03-01-03-02-01-01-01", "03-01-05-01-02-01-01", "03-01-01-01-01-01-01"],
        "02": ["03-01-04-02-02-02-02"],
        "21": ["03-01-07-01-01-01-21"],
        "23": ["03-01-08-02-01-01-23", "03-01-06-01-01-01-23"],
    }
    for actor, stems in names.items():
        for st in stems:
            _wav(root / f"Actor_{actor}" / f"{st}.wav")
            _fit(fits / f"Actor_{actor}" / f"{st}.npz")
    _wav(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: skipped
    (root / "Actor_01" / "02-01-03-01-01-01-01.mp4").write_bytes(b"\x00")  # video-only: skipped
    _wav(root / "Actor_01" / "notes.wav")  # not a RAVDESS name
    _wav(root / "Actor_02" / "03-01-03-01-01-01-02.wav")  # no fit
    _wav(root / "Actor_02" / "03-01-05-01-01-01-02.wav", seconds=2.0)
    _fit(fits / "03-01-05-01-01-01-02.npz", seconds=1.0)  # durations disagree
    of.mkdir()
    (of / "03-01-03-02-01-01-01.csv").write_text(
        "frame, AU01_r, AU06_r, AU12_r, AU25_r\n1, 0.1, 4.0, 4.5, 0.2\n2, 0.1, 3.8, 4.3, 0.4\n")
    return root, fits, of


def test_ravdess_import(tmp_path, ravdess_tree):
    root, fits, of = ravdess_tree
    m = import_ravdess(root, fits, tmp_path / "out", openface=of, progress=False)
    clips = {c.id: c for c in read_manifest(tmp_path / "out")}
    assert len(clips) == 7
    assert clips["03-01-08-02-01-01-23"].split == "test" and clips["03-01-07-01-01-01-21"].split == "val"
    happy = clips["03-01-03-02-01-01-01"]
    assert (happy.emotion, happy.intensity, happy.split) == ("happy", 3, "train")
    assert happy.extra["labels"]["action_units_from"] == "openface"
    assert "cheek" in happy.instructions[0] and "lip corner" in happy.instructions[0]
    assert happy.extra["text"] == "Kids are talking by the door."
    assert clips["03-01-01-01-01-01-01"].extra["labels"]["action_units_from"] == "emotion prototype"
    rep = json.loads((tmp_path / "out" / "import_report.json").read_text())
    reasons = " | ".join(s["reason"] for s in rep["skipped"])
    assert rep["skipped_count"] == 5
    for why in ("song", "video-only", "not a RAVDESS file name", "no FLAME fit", "motion lasts 1.00 s but audio 2.00 s"):
        assert why in reasons
    a = FlameSequence.load(tmp_path / "out" / happy.flame)
    assert a.num_frames == 30 and (tmp_path / "out" / happy.audio).is_file()


def test_mead_import_with_m4a_and_given_splits(tmp_path):
    root, fits = tmp_path / "MEAD", tmp_path / "fits"
    for sid, emo, lvl, num in [("M012", "neutral", 1, "017"), ("M012", "happy", 3, "002"), ("W015", "sad", 2, "011"),
                               ("M003", "contempt", 1, "005")]:
        p = root / sid / "audio" / emo / f"level_{lvl}" / f"{num}.m4a"
        p.parent.mkdir(parents=True)
        write_m4a(p, tone(1.2))
        _fit(fits / sid / f"{sid}_front_{emo}_level{lvl}_{num}.npz")
    (root / "M012" / "audio" / "bored" / "level_1").mkdir(parents=True)
    _wav(root / "M012" / "audio" / "bored" / "level_1" / "001.wav")
    import_mead(root, fits, tmp_path / "out", test_speakers=("W015",), val_speakers=("M003",), progress=False)
    clips = {c.id: c for c in read_manifest(tmp_path / "out")}
    assert set(clips) == {"M012_front_neutral_level1_017", "M012_front_happy_level3_002", "W015_front_sad_level2_011",
                          "M003_front_contempt_level1_005"}
    assert clips["W015_front_sad_level2_011"].split == "test" and clips["M003_front_contempt_level1_005"].split == "val"
    assert clips["M012_front_happy_level3_002"].intensity == 3
    rep = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert any("unexpected MEAD path" in s["reason"] for s in rep["skipped"])


def test_import_with_nothing_usable_stops_clearly(tmp_path):
    (tmp_path / "R").mkdir()
    _wav(tmp_path / "R" / "03-01-03-01-01-01-01.wav")
    (tmp_path / "nofits").mkdir()
    with pytest.raises(DatasetError, match="no clip could be imported"):
        import_ravdess(tmp_path / "R", tmp_path / "nofits", tmp_path / "out", progress=False)
    with pytest.raises(DatasetError, match="fits folder not found"):
        import_ravdess(tmp_path / "R", tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(DatasetError, match="not a folder"):
        import_mead(tmp_path / "missing", tmp_path, tmp_path / "o2", progress=False)


def test_ravdess_audio_only_import_reports_bad_files(tmp_path, cli):
    """Labelled speech without motion: FLAC or wav, emotion and intensity from the name, no flame file; odd names,
    unreadable files and song clips are reported with the reason and the import goes on."""
    root = tmp_path / "R"
    for stem, sec in (("03-01-05-02-01-01-01", 1.5), ("03-01-02-01-02-02-01", 1.2), ("03-01-03-01-01-01-02", 1.3)):
        p = root / f"Actor_{stem[-2:]}" / f"{stem}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), tone(sec, 16000), 16000, format="FLAC")
    _wav(root / "Actor_02" / "03-01-08-02-02-01-02.wav")
    (root / "Actor_02" / "03-01-04-01-01-01-02.wav").write_bytes(b"RIFF not really")  # unreadable
    _wav(root / "Actor_02" / "hello.wav")  # not a RAVDESS name
    _wav(root / "Actor_02" / "03-02-04-01-01-01-02.wav")  # song
    code, out, err = cli("data", "ravdess", root, "-o", tmp_path / "out", "--test-actors", "none", "--val-actors", "2")
    assert code == 0, err
    clips = {c.id: c for c in read_manifest(tmp_path / "out")}
    assert set(clips) == {"03-01-05-02-01-01-01", "03-01-02-01-02-02-01", "03-01-03-01-01-01-02", "03-01-08-02-02-01-02"}
    angry, calm = clips["03-01-05-02-01-01-01"], clips["03-01-02-01-02-02-01"]
    assert (angry.emotion, angry.intensity, angry.flame, angry.extra["has_motion"]) == ("angry", 3, "", False)
    assert (calm.emotion, calm.intensity) == ("neutral", 1)  # calm counts as weak neutral
    assert clips["03-01-08-02-02-01-02"].split == "val" and angry.split == "train"
    assert angry.extra["text"] == "Kids are talking by the door." and calm.extra["text"] == "Dogs are sitting by the door."
    assert all(c.instructions for c in clips.values()) and not (tmp_path / "out" / "flame").exists()
    rep = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert rep["audio_only"] is True and rep["skipped_count"] == 3
    reasons = {s["id"]: s["reason"] for s in rep["skipped"]}
    assert reasons["hello"] == "not a RAVDESS file name" and "song" in reasons["03-02-04-01-01-01-02"]
    assert "03-01-04-01-01-01-02" in reasons  # unreadable: reported, not fatal
    code, _, err = cli("data", "ravdess", root, "-o", tmp_path / "o2", "--test-actors", "x,y")
    assert code == 2 and "expected comma-separated actor numbers" in err and "Traceback" not in err
