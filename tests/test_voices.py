"""Plain voices: importing speech that shares one label, and the emotion reader's leave-speakers-out folds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avitalk.audio import save_wav
from avitalk.types import Audio

from .conftest import speechlike


def _read_folder(root, speakers=("19", "26", "103", "1034"), per=2):
    """LibriSpeech's layout (SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac) and the flat one, mixed."""
    for i, spk in enumerate(speakers):
        for u in range(per):
            d = root / spk / "100" if i % 2 else root
            d.mkdir(parents=True, exist_ok=True)
            save_wav(d / f"{spk}-100-{u:04d}.wav", Audio(speechlike(1.0, seed=i * 10 + u)))
    return root


def test_import_speech_labels_every_clip_and_reads_speakers_from_names(tmp_path, cli):
    from avitalk.data.manifest import read_manifest
    from avitalk.data.real import import_speech, speaker_of
    from avitalk.errors import DatasetError

    src = _read_folder(tmp_path / "read")
    import_speech(src, tmp_path / "out", source="librispeech", progress=False)
    clips = read_manifest(tmp_path / "out")
    assert len(clips) == 8 and {c.emotion for c in clips} == {"neutral"} and {c.split for c in clips} == {"train"}
    assert {c.speaker for c in clips} == {"19", "26", "103", "1034"}
    assert not any(c.flame for c in clips)
    import_speech(src, tmp_path / "held", holdout=0.25, progress=False)
    splits = {c.speaker: c.split for c in read_manifest(tmp_path / "held")}
    assert sorted(splits.values()).count("test") == 1 and sorted(splits.values()).count("val") == 1
    assert speaker_of(tmp_path / "p225_003.wav", tmp_path) == "p225"
    assert speaker_of(tmp_path / "anna" / "take1.wav", tmp_path) == "anna"
    with pytest.raises(DatasetError, match="emotion 'bored'"):
        import_speech(src, tmp_path / "x", emotion="bored", progress=False)
    (tmp_path / "empty").mkdir()
    code, out, err = cli("data", "speech", tmp_path / "empty", "-o", tmp_path / "y")
    assert code == 2 and "no audio files" in err and "Traceback" not in err
    code, out, err = cli("data", "speech", src, "-o", tmp_path / "z", "--emotion", "sad", "--intensity", "3")
    assert code == 0, err
    assert {(c.emotion, c.intensity) for c in read_manifest(tmp_path / "z")} == {("sad", 3)}


def _corpus(rng, n_spk, per, labels, shift, copies=2, dim=6, split=None):
    """Utterance statistics of a fake corpus: emotion cues on the first channels, a corpus offset on the last."""
    from avitalk.vocab import EMOTIONS

    spk, emo, clean = [], [], []
    for s in range(n_spk):
        for _ in range(per):
            e = labels[int(rng.integers(len(labels)))]
            x = rng.standard_normal(dim) * 0.8
            x[EMOTIONS.index(e) % (dim - 1)] += 2.0
            x[-1] += shift
            spk.append(f"s{s:02d}")
            emo.append(e)
            clean.append(x)
    clean = np.asarray(clean, np.float32)
    aug = clean[:, None, :] + 0.3 * rng.standard_normal((len(clean), copies, dim)).astype(np.float32)
    return {"clean": clean, "aug": aug, "emotion": np.asarray(emo), "speaker": np.asarray(spk),
            "split": np.asarray(split(spk) if split else ["train"] * len(spk))}


def test_voice_folds_learn_plain_speech_and_calibrate_on_held_out_speakers(tmp_path):
    """The folds script on fake statistics: read speech (all neutral, a voice of its own) is called emotional by the
    recipe that never heard it and neutral by the one that did; temperatures and thresholds are fitted per fold on the
    other folds; the shipped reader carries the pooled ones; the plots are written."""
    from .test_real_speech import _script

    vf = _script("voice_folds")
    rng = np.random.default_rng(0)
    acted = ["neutral", "angry", "happy", "sad", "fear", "disgusted", "surprised"]
    data = {
        "synthtalk": _corpus(rng, 12, 20, acted + ["contempt"], 0.0, copies=0,
                             split=lambda s: ["val" if x in ("s00", "s01") else "train" for x in s]),
        "ravdess": _corpus(rng, 9, 20, acted, 1.0),
        "librispeech": _corpus(rng, 12, 4, ["neutral"], -3.0),
    }
    data["librispeech"]["clean"][:, 3] += 2.5  # plain voices resemble one acted emotion (here: disgusted's channel)
    data["librispeech"]["aug"][:, :, 3] += 2.5
    s = vf.run_folds(data, 3, vf.variants(["acted", "read"]))
    before, after = s["table"]["acted"], s["table"]["read"]
    assert before["argmax"]["librispeech"]["written_neutral"] < 0.5
    assert after["argmax"]["librispeech"]["written_neutral"] > 0.9
    assert len(after["temperature_per_fold"]) == 3 and all(0.25 <= t <= 20 for t in after["temperature_per_fold"])
    assert after["ece"] < 0.12 and 0 <= after["threshold"] < 1
    assert len(s["curves"]["read"]) == 20
    vf.plot_summary(s, "read", tmp_path)
    assert (tmp_path / "reliability.png").stat().st_size > 1000 and (tmp_path / "coverage.png").stat().st_size > 1000
    reader = vf.shipped_reader(data, vf.VARIANTS["read"], after["temperature"], after["threshold"])
    assert (reader.temperature, reader.threshold) == (after["temperature"], after["threshold"])
    assert reader.dim == 6
    json.dumps(s)  # the summary is plain JSON


def test_reading_report_flags_one_emotion_written_for_a_corpus_labelled_otherwise():
    """eval.real_speech.reading_report: neutral share, most-written emotion against its labelled share, precision of
    emotion-naming instructions; calibration and the curve only with heard probabilities for every clip."""
    from avitalk.vocab import EMOTIONS
    from avitalk.eval.real_speech import reading_report

    plain = ["neutral"] * 10
    r = reading_report(["disgusted"] * 6 + ["neutral"] * 4, None, plain, 0.6)
    assert r["written_neutral"] == 0.4 and r["most_written"] == ["disgusted", 0.6] and r["one_emotion_for_all"]
    assert r["non_neutral_precision"] == 0.0 and "ece" not in r
    ok = reading_report(["neutral"] * 9 + ["sad"], None, plain, 0.6)
    assert ok["written_neutral"] == 0.9 and not ok["one_emotion_for_all"]  # the corpus is labelled neutral
    acted = ["angry"] * 5 + ["sad"] * 5
    heard = [{e: (0.9 if e == t else 0.1 / 7) for e in EMOTIONS} for t in acted]
    r = reading_report(acted, heard, acted, 0.6)
    assert r["non_neutral_precision"] == 1.0 and not r["one_emotion_for_all"]
    assert r["ece"] == pytest.approx(0.1, abs=1e-6) and r["curve"][0]["accuracy"] == 1.0
    assert r["curve"][-1]["non_neutral_share"] == 0.0  # at 0.95 every clip is written neutral
