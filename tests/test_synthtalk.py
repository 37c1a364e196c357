import hashlib

import numpy as np
import pytest

from avitalk.data import synthtalk as ST
from avitalk.data.espeak import EspeakError, synthesize
from avitalk.data.manifest import read_manifest, stats
from avitalk.errors import DatasetError
from avitalk.types import FlameSequence


def test_espeak_speaks_with_phoneme_timing():
    u = synthesize("Mama made a map.", "en-us+m3", rate=160)
    assert u.sample_rate == 22050 and 0.6 < u.duration < 3.0
    times = [t for _, t in u.phonemes]
    assert len(u.phonemes) >= 8 and times == sorted(times) and times[-1] <= u.duration
    assert any(ph.strip("'") == "m" for ph, _ in u.phonemes)
    # reproducible whatever was spoken before
    synthesize("Something else entirely.", "en+f2", seed=9, rate=220, wordgap=3)
    again = synthesize("Mama made a map.", "en-us+m3", rate=160)
    assert np.array_equal(u.samples, again.samples)
    with pytest.raises(EspeakError, match="no voice"):
        synthesize("hello", "xx-nope+zz")


def test_phoneme_to_viseme_mapping():
    assert ST.phoneme_visemes("m") == ("VIS_MBP",)
    assert ST.phoneme_visemes("'aI") == ("VIS_AA", "VIS_EE")
    assert ST.phoneme_visemes("f") == ("VIS_FV",) and ST.phoneme_visemes("u:") == ("VIS_OO",)
    assert ST.phoneme_visemes(";") == ("SIL",) and ST.phoneme_visemes("Q!") == ("VIS_IH",)


def test_mouth_closes_on_bilabials_and_opens_on_vowels_smoothly():
    spk = ST.speakers()[0]
    # "m a m a m a": 120 ms each
    phon = [(p, 0.2 + 0.12 * i) for i, p in enumerate(["m", "a", "m", "a", "m", "a"])]
    T = 30
    env = np.ones(T, np.float32)
    jaw, vis = ST.speech_motion(phon, 1.2, env, spk, T)
    frame = lambda t: int(round(t * 25))  # noqa: E731
    m_centres = [frame(0.2 + 0.12 * i + 0.06) for i in (0, 2, 4)]
    a_centres = [frame(0.2 + 0.12 * i + 0.06) for i in (1, 3, 5)]
    assert all(jaw[a] > jaw[m] + 0.05 for a, m in zip(a_centres, m_centres))
    assert vis["VIS_MBP"][m_centres[1]] > 0.5
    assert np.abs(np.diff(jaw)).max() < 0.08  # no square steps
    assert jaw[0] < 0.02  # at rest before speech


def test_speakers_and_splits_are_fixed_and_disjoint():
    spk = ST.speakers()
    assert len(spk) == len(ST.ACCENTS) * len(ST.VARIANTS)
    by = {s: {p.name for p in spk if p.split == s} for s in ("train", "val", "test")}
    assert len(by["test"]) == 12 and len(by["val"]) == 12
    assert not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    assert ST.speakers() == spk  # deterministic


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("st")
    ST.generate(root, 24, seed=3, workers=2, progress=False)
    return root


def test_corpus_format_and_contents(corpus):
    clips = read_manifest(corpus)
    assert len(clips) == 24
    st = stats(clips)
    assert 2.0 <= st["duration_s"]["min"] and st["duration_s"]["max"] <= 6.2 + 1.8  # speech + lead and trail pauses
    spk_split = {}
    for c in clips:
        assert spk_split.setdefault(c.speaker, c.split) == c.split  # a speaker lives in one split
        seq = FlameSequence.load(corpus / c.flame)
        assert seq.n_exp == 50 and seq.fps == 25 and abs(seq.duration - c.duration) <= 0.04
        assert len(c.instructions) >= 2 and len(set(c.instructions)) == len(c.instructions)
        assert c.extra["labels"]["emotion"] == c.emotion
        assert (corpus / c.audio).is_file()


def _digest(root):
    h = hashlib.sha256()
    for p in sorted((root / "flame").glob("*.npz")):
        s = FlameSequence.load(p)
        h.update(s.expression.tobytes() + s.jaw_pose.tobytes())
    for p in sorted((root / "audio").glob("*.wav")):
        h.update(p.read_bytes())
    h.update((root / "manifest.jsonl").read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed_whatever_the_workers(corpus, tmp_path):
    ST.generate(tmp_path / "again", 24, seed=3, workers=1, progress=False)
    assert _digest(tmp_path / "again") == _digest(corpus)
    ST.generate(tmp_path / "other", 4, seed=4, workers=1, progress=False)
    assert read_manifest(tmp_path / "other")[0].text if hasattr(read_manifest(tmp_path / "other")[0], "text") else True
    a = FlameSequence.load(tmp_path / "other" / "flame" / "st000000.npz")
    b = FlameSequence.load(corpus / "flame" / "st000000.npz")
    assert a.expression.shape != b.expression.shape or not np.allclose(a.expression, b.expression)


def test_resume_skips_finished_clips_and_redoes_missing(tmp_path):
    root = tmp_path / "c"
    ST.generate(root, 6, seed=1, workers=1, progress=False)
    keep = root / "audio" / "st000001.wav"
    before = keep.stat().st_mtime_ns
    (root / "flame" / "st000004.npz").unlink()  # an interrupted clip: its record exists but a file is gone
    (root / "records" / "st000005.json").unlink()  # another: never finished
    ST.generate(root, 6, seed=1, workers=1, progress=False)
    assert keep.stat().st_mtime_ns == before
    assert (root / "flame" / "st000004.npz").is_file() and len(read_manifest(root)) == 6
    with pytest.raises(DatasetError, match="refusing to mix"):
        ST.generate(root, 6, seed=2, workers=1, progress=False)


@pytest.mark.slow
def test_corpus_is_learnable(tmp_path):
    from avitalk.data.learnability import emotion_from_audio, jaw_envelope_correlation

    ST.generate(tmp_path / "l", 480, seed=0, workers=2, progress=False)
    emo = emotion_from_audio(tmp_path / "l")
    assert emo["test_clips"] >= 30 and emo["accuracy"] > 0.35  # chance is 0.125
    assert jaw_envelope_correlation(tmp_path / "l")["mean_r"] > 0.6
