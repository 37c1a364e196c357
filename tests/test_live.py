"""Live streaming: the incremental encoder's window, the motion stream against the offline decoder, instruction
blending, the session's catch-up and timing, and `avitalk live` (no microphone, a recording played)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from avitalk.encoders.streaming import FRAME_SAMPLES, StreamingEncoder
from avitalk.types import SAMPLE_RATE, Audio

from .conftest import build_tiny_pipeline, speechlike


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


def _chunks(x: np.ndarray, seed: int = 0, lo: int = 10, hi: int = 2000):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(lo, hi))
        yield x[i : i + n]
        i += n


def test_streaming_encoder_window_is_the_offline_encoding_of_the_last_seconds(pipe):
    from avitalk.encoders import to_motion_rate

    x = speechlike(6.0, seed=1)
    enc = StreamingEncoder(pipe.audio_encoder, context_s=1.0)
    for part in _chunks(x):
        enc.push(part)
        # the buffer stays bounded: the context and at most one unfinished encoder frame (plus the last chunk)
        assert len(enc._buf) <= enc.context + 2000 + FRAME_SAMPLES
    assert enc.frames_ready == len(x) // FRAME_SAMPLES
    first, feats = enc.encode()
    assert first == enc.frames_ready - 25 and feats.shape == (25, pipe.audio_encoder.dim)
    s, e = first * FRAME_SAMPLES, enc.frames_ready * FRAME_SAMPLES
    want = to_motion_rate(pipe.audio_encoder.encode(Audio(x[s:e])), 25)
    np.testing.assert_allclose(feats, want, atol=1e-5)


def test_streaming_loud_level_follows_what_was_heard_and_is_floored():
    from avitalk.encoders.prosody import loud_level, frame_log_energy
    from avitalk.encoders.streaming import LEVEL_FLOOR

    class Enc:  # only the energy bookkeeping is exercised
        dim, prosody, prosody_dim = 4, True, 4

    enc = StreamingEncoder(Enc(), context_s=1.0, level_s=2.0)
    enc.push(np.zeros(SAMPLE_RATE, np.float32))
    assert enc.level == LEVEL_FLOOR  # silence alone is not a loud level
    loud = speechlike(3.0)
    enc.push(loud)
    tail = loud[-2 * SAMPLE_RATE :]
    assert enc.level == pytest.approx(max(loud_level(frame_log_energy(tail)), LEVEL_FLOOR), abs=1e-9)


def test_stream_windows_are_what_the_streaming_encoder_returns(pipe):
    """The live decoder's training windows (encoders.streaming.stream_windows, many in one batch) are the features a
    stream hands the decoder after hearing the same audio: at its start (shorter windows) and later, loud level and
    all."""
    from avitalk.encoders.streaming import stream_windows

    x = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speechlike(3.0, seed=2)])
    ends = [1, 7, 30, len(x) // FRAME_SAMPLES]
    got = stream_windows(pipe.audio_encoder, [x] * len(ends), ends, 1.0)
    for e, (first, f) in zip(ends, got):
        enc = StreamingEncoder(pipe.audio_encoder, context_s=1.0)
        for part in _chunks(x[: e * FRAME_SAMPLES], seed=e):
            enc.push(part)
        want_first, want = enc.encode()
        assert first == want_first == max(0, e - 25) and f.shape == want.shape == (min(e, 25), pipe.audio_encoder.dim)
        np.testing.assert_allclose(f, want, atol=1e-5)
    with pytest.raises(Exception, match="within the audio"):
        stream_windows(pipe.audio_encoder, [x], [len(x) // FRAME_SAMPLES + 1], 1.0)

    class LevelEnc:  # an encoder with a relative loudness channel: the loud level it is given is its output
        dim, prosody, prosody_dim = 1, True, 1

        def encode_batch(self, audios, levels=None):
            return [np.full((int(round(a.duration * 50)), 1), lv, np.float32) for a, lv in zip(audios, levels)]

    y = np.concatenate([speechlike(2.0, seed=3), 0.05 * speechlike(2.0, seed=4)])
    for e in (10, 60, 99):
        enc = StreamingEncoder(LevelEnc(), context_s=1.0, level_s=1.5)
        enc.push(y[: e * FRAME_SAMPLES])
        (_, f), = stream_windows(LevelEnc(), [y], [e], 1.0, level_s=1.5)
        np.testing.assert_allclose(f, enc.encode()[1])
        assert f[0, 0] == pytest.approx(enc.level)


def _offline_end(synth, feats: np.ndarray, z: torch.Tensor, end: int) -> np.ndarray:
    """The decoder on the clip of frames [end - window, end) (what the stream computes for the frame it emits)."""
    w = synth.decoder.window
    x = torch.as_tensor(feats[max(0, end - w) : end])[None]
    with torch.no_grad():
        return synth.decoder(x, z[None])[0].numpy()


def test_motion_stream_frame_is_the_decoder_on_a_clip_ending_lookahead_later(pipe):
    from avitalk.stage2_synthesis.stream import MotionStream

    synth = pipe.synthesizer
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((60, pipe.audio_encoder_dim)).astype(np.float32)
    L = 3
    ms = MotionStream(synth, "A happy person speaks.", lookahead=L, seed=0, lip_seal=False)
    got = []
    for n in range(1, 61):  # one new frame of audio at a time, the whole window given each time
        got.append(ms.step(max(0, n - 40), feats[max(0, n - 40) : n]))
    got.append(ms.step(20, feats[20:60], final=True))
    m = np.concatenate(got)
    assert m.shape == (60, synth.decoder.n_motion)
    z = ms.style_at(10)
    for f in (0, 5, 30, 56):
        want = _offline_end(synth, feats, z, f + 1 + L)
        np.testing.assert_allclose(m[f], want[f - max(0, f + 1 + L - synth.decoder.window)], atol=1e-5)
    # the last frames (no look-ahead left) come from the clip's end
    np.testing.assert_allclose(m[59], _offline_end(synth, feats, z, 60)[-1], atol=1e-5)


def test_motion_stream_with_lookahead_to_the_end_is_the_offline_motion(pipe):
    """A look-ahead reaching the end of the audio (a clip within one window): the stream is the offline path, lip seal
    included."""
    from avitalk.stage2_synthesis.stream import MotionStream

    synth = pipe.synthesizer
    feats50 = np.random.default_rng(1).standard_normal((28, pipe.audio_encoder_dim)).astype(np.float32)
    off = synth.synthesize(feats50, "A sad person speaks.", seed=0, num_frames=14, lip_seal=True)[0]
    from avitalk.encoders import to_motion_rate

    feats = to_motion_rate(feats50, 14)
    ms = MotionStream(synth, "A sad person speaks.", lookahead=15, seed=0, lip_seal=True)
    parts = [ms.step(0, feats[:n]) for n in range(1, 15)]
    assert all(len(p) == 0 for p in parts)  # every frame still waits for its look-ahead
    m = ms.step(0, feats, final=True)
    np.testing.assert_allclose(m[:, :-3], off.expression, atol=1e-5)
    np.testing.assert_allclose(m[:, -3:], off.jaw_pose, atol=1e-5)


def test_instruction_blends_in_smoothly(pipe):
    from avitalk.stage2_synthesis.stream import MotionStream

    ms = MotionStream(pipe.synthesizer, "A happy person speaks.", lookahead=2, seed=0, blend_s=0.2)  # 5 frames
    z0 = ms.style_at(0).clone()
    ms.next_frame = 10
    ms.set_instruction("A furious person speaks.")
    z1 = ms._z_to
    path = torch.stack([ms.style_at(f) for f in range(8, 17)])
    d = (path - z0).norm(dim=1) / (z1 - z0).norm()
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(0.0, abs=1e-6)  # before the change
    assert 0 < d[2] < d[3] < d[4] < d[5] < 1  # frames 10..13 on the way
    assert d[6:].min() == pytest.approx(1.0, abs=1e-6)  # frame 14 on: the new style
    with pytest.raises(ValueError, match="lookahead"):
        MotionStream(pipe.synthesizer, "A person speaks.", lookahead=pipe.synthesizer.decoder.window)


def test_session_makes_every_frame_whatever_the_chunking_and_catches_up(pipe):
    from avitalk.top.live import LiveSession

    x = speechlike(3.0, seed=2)
    s1 = LiveSession(pipe, lookahead_ms=80, context_s=1.0)
    frames = []
    for part in _chunks(x, lo=100, hi=400):
        frames += s1.feed(part)
    frames += s1.finish()
    assert [f.index for f in frames] == list(range(len(x) // FRAME_SAMPLES))
    # one chunk longer than the encoder's window: the session steps on the way instead of losing frames
    s2 = LiveSession(pipe, lookahead_ms=80, context_s=1.0).warm_up()
    assert s2.frames == [] and s2.encoder.samples_in == 0  # warming up keeps nothing
    frames2 = s2.feed(x) + s2.finish()
    assert [f.index for f in frames2] == list(range(len(x) // FRAME_SAMPLES))
    t = s1.timing()
    assert t["frames"] == len(frames) and t["latency_ms"]["median"] >= 0 and t["step_ms"]["median"] > 0
    with pytest.raises(Exception, match="empty|1..512|characters"):
        s1.set_instruction("   ")
    with pytest.raises(ValueError, match="look-ahead"):
        LiveSession(pipe, lookahead_ms=400, context_s=0.4)


def test_run_live_plays_a_recording_and_applies_scripted_changes(pipe):
    from avitalk.top.live import LiveSession, WavSource, run_live

    x = speechlike(2.0, seed=3)
    session = LiveSession(pipe, lookahead_ms=40, context_s=1.0)
    seen = []
    timing = run_live(session, WavSource(Audio(x), chunk_ms=20, realtime=False), sinks=[seen.extend],
                      changes=[(1.0, "A surprised person speaks.")])
    assert [f.index for f in seen] == list(range(50))
    assert timing["frames"] == 50 and "late_ms" in timing
    change = dict((t, f) for f, t in session.changes)["A surprised person speaks."]
    assert abs(change - 25) <= 2  # 1.0 s of audio, less the look-ahead still waiting
    assert seen[-1].instruction == "A surprised person speaks." and seen[0].instruction == "A person speaks."


def test_live_without_a_microphone_is_one_line_naming_input(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as where PortAudio is missing
    code, out, err = cli("live")
    assert code == 2
    assert err.count("\n") == 1 and "--input" in err and "microphone" in err


def test_live_bad_options_are_one_line(cli, wav_file):
    w = wav_file(seconds=1.0)
    for args, word in ((["--fast"], "--input"), (["--input", w, "--change", "soon:A happy person."], "--change"),
                       (["--input", w, "--instruction", " "], "empty"), (["--input", w, "--size", "15"], "--size"),
                       (["--input", w, "--lookahead-ms", "2400"], "--lookahead-ms")):
        code, out, err = cli("live", *args)
        assert code == 2 and word in err and err.count("\n") == 1, (args, err)


@pytest.mark.slow
def test_live_records_the_four_files_with_latency(cli, tmp_path):
    import soundfile as sf

    wav = tmp_path / "speech.wav"
    sf.write(wav, speechlike(2.0, seed=4), SAMPLE_RATE)
    out = tmp_path / "rec"
    code, _, err = cli("live", "--input", wav, "--record", out, "--size", "64", "-q",
                       "--change", "1:A happy person speaks.")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["flame.npz", "instruction.txt", "run.json", "video.mp4"]
    info = json.loads((out / "run.json").read_text())
    live = info["timings"]["live"]
    assert live["frames"] == 50 and live["latency_ms"]["median"] >= live["lookahead_ms"] - 1
    assert info["instruction"]["text"] == "A happy person speaks." and len(info["instruction"]["changes"]) == 2
    assert info["stream"] == {"decoder": "live", "context_s": 2.0, "lookahead_ms": 120.0}  # the default's live decoder
    from avitalk.types import FlameSequence

    assert FlameSequence.load(out / "flame.npz").expression.shape[0] == 50


@pytest.mark.slow
def test_live_with_stage1_rereading_records_its_reads(cli, tmp_path):
    import soundfile as sf

    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE  # 5 s of a voiced sound: every window holds enough "speech"
    x = (0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    sf.write(tmp_path / "tone.wav", x, SAMPLE_RATE)
    code, _, err = cli("live", "--input", tmp_path / "tone.wav", "--record", tmp_path / "rec", "--no-render", "-q",
                       "--fast", "--reread", "2")
    assert code == 0, err
    info = json.loads((tmp_path / "rec" / "run.json").read_text())
    reads = info["reread"]["reads"]
    assert [r["audio_s"] for r in reads] == [2.0, 4.0] and all(r["text"] and r["heard"] for r in reads)
    assert info["reread"]["every_s"] == 2.0 and not info["reread"]["stopped_by_user"]
    assert {c["by"] for c in info["instruction"]["changes"]} <= {"start", "stage 1"}


def test_live_serve_without_threejs_is_one_line(cli, wav_file, monkeypatch, tmp_path):
    import avitalk.top.live_page as lp

    monkeypatch.delenv("AVITALK_THREE", raising=False)
    monkeypatch.setattr(lp, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("live", "--input", wav_file(seconds=1.0), "--serve")
    assert code == 2 and "three.js" in err and err.count("\n") == 1


def test_live_page_port_in_use_is_one_error(pipe, monkeypatch):
    import socket

    import avitalk.top.live_page as lp
    from avitalk.errors import AvitalkError
    from avitalk.top.live import LiveSession

    monkeypatch.setattr(lp, "three_dir", lambda: lp.ROOT)  # the page's files are not read in this test
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(AvitalkError, match="--port 0"):
            lp.LivePage(LiveSession(pipe, lookahead_ms=40, context_s=1.0), port=s.getsockname()[1])
    page = lp.LivePage(LiveSession(pipe, lookahead_ms=40, context_s=1.0), port=0)
    try:
        import urllib.request

        html = urllib.request.urlopen(page.url).read().decode()
        assert "EventSource" in html and len(urllib.request.urlopen(page.url + "face.glb").read()) > 1000
        req = urllib.request.Request(page.url + "instruction", data=b"A sad person speaks.", method="POST")
        assert urllib.request.urlopen(req).status == 204
        assert page.session.step() == [] and page.session.instruction == "A sad person speaks."
    finally:
        page.close()


def test_stage1_rereads_the_last_seconds_and_changes_only_a_new_emotion(pipe):
    """Rereader: every ``every_s`` of audio, the last ``window_s`` (when there is speech in it) go to stage 1 on a
    thread; its instruction replaces the one in force only when the emotion or intensity differs; a person's
    instruction ends it."""
    from avitalk.top.live import LiveSession, Rereader, speech_seconds
    from avitalk.types import Instruction

    class Stage1:  # stage 1 stand-in: writes the next scripted instruction, records what it was given
        instructor, source = object(), "stub"

        def __init__(self, texts):
            self.texts, self.lengths = iter(texts), []

        def encode(self, a):
            self.lengths.append(a.duration)

        def instruct(self, a, features=None):
            return Instruction(next(self.texts))

        def heard(self, a, features=None):
            return {"happy": np.float32(0.7), "sad": 0.2}

    assert speech_seconds(np.zeros(SAMPLE_RATE, np.float32)) == 0.0
    assert speech_seconds(speechlike(2.0)) > 0.8
    stage1 = Stage1(["A happy person speaks.", "A happy person speaks.", "A sad person speaks.", "A sad person speaks."])
    session = LiveSession(pipe, lookahead_ms=40, context_s=1.0)
    rr = Rereader(session, stage1, every_s=1.0, window_s=1.5, min_speech_s=0.3)
    x = np.concatenate([speechlike(3.0, seed=5), np.zeros(SAMPLE_RATE, np.float32), speechlike(1.0, seed=6)])
    for part in np.split(x, 50):  # 0.1 s chunks
        session.feed(part)
        rr(part)
        rr.drain()
    assert len(stage1.lengths) == 4 and all(d == pytest.approx(1.5) for d in stage1.lengths[1:])
    assert rr.skipped == 1  # the window with the second of silence in it
    assert [r["used"] for r in rr.reads] == [True, False, True, False]
    assert [a for a in session.authors] == ["start", "stage 1", "stage 1"]
    assert [t for _, t in session.changes][1:] == ["A happy person speaks.", "A sad person speaks."]
    assert rr.reads[0]["heard"] == {"happy": 0.7, "sad": 0.2} and rr.reads[0]["emotion"] == "happy"
    session.set_instruction("A calm person speaks.")  # a person's word: stage 1 stops re-reading
    for part in np.split(speechlike(2.0, seed=7), 20):
        session.feed(part)
        rr(part)
        rr.drain()
    info = rr.close()
    assert len(info["reads"]) == 4 and info["stopped_by_user"] and session.authors[-1] == "user"
    with pytest.raises(Exception, match="stage 1"):
        Rereader(session, type("NoStage1", (), {"instructor": None, "source": "x"})())
