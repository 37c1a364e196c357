import numpy as np
import pytest

from avitalk import audio as A
from avitalk.errors import AudioError
from avitalk.types import Audio

from .conftest import tone, write_m4a


@pytest.mark.parametrize("name", ["a.wav", "a.flac", "a.ogg", "a.mp3"])
def test_load_formats_to_16k_mono(wav_file, name):
    p = wav_file(name, seconds=1.0, sr=44_100, channels=2)
    a = A.load(p)
    assert a.sample_rate == 16_000 and a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.duration == pytest.approx(1.0, abs=0.06)  # mp3/ogg pad a few ms
    assert np.abs(a.samples).max() <= 1.0


def test_resampling_keeps_frequency(wav_file):
    a = A.load(wav_file("hi.wav", seconds=1.0, sr=44_100, freq=1000.0))
    spec = np.abs(np.fft.rfft(a.samples))
    peak_hz = np.argmax(spec) * a.sample_rate / len(a.samples)
    assert peak_hz == pytest.approx(1000.0, abs=2.0)


def test_m4a_through_pyav(tmp_path):
    """MEAD ships m4a: libsndfile cannot read it, the PyAV fallback must."""
    p = write_m4a(tmp_path / "clip.m4a", tone(1.2, 16_000))
    a = A.load(p)
    assert a.duration == pytest.approx(1.2, abs=0.1)
    assert 0.1 < np.abs(a.samples).max() <= 1.0


def test_bad_inputs_name_file_and_reason(tmp_path, wav_file):
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        A.load(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="is a directory"):
        A.load(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        A.load(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="notes.wav: not an audio file"):
        A.load(tmp_path / "notes.wav")
    with pytest.raises(AudioError, match="0.200 s long; at least 0.3 s"):
        A.load(wav_file("short.wav", seconds=0.2))
    with pytest.raises(AudioError, match="silent"):
        A.load(wav_file("quiet.wav", seconds=1.0, amp=0.0))
    with pytest.raises(AudioError, match="limit is 2 s"):
        A.load(wav_file("long.wav", seconds=3.0), max_duration_s=2)


def test_nan_samples_refused(tmp_path):
    import soundfile as sf

    x = tone(1.0)
    x[100] = np.nan
    sf.write(str(tmp_path / "nan.wav"), x, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        A.load(tmp_path / "nan.wav")


def test_from_array_accepts_int_pcm_and_channels_first():
    x = (tone(0.5, 8000) * 32767).astype(np.int16)
    a = A.from_array(np.stack([x, x]), 8000)
    assert a.sample_rate == 16_000 and a.duration == pytest.approx(0.5, abs=1e-3)
    assert np.abs(a.samples).max() == pytest.approx(0.3, abs=0.02)


def test_save_wav_roundtrip(tmp_path):
    a = Audio(tone(0.5))
    A.save_wav(tmp_path / "o.wav", a)
    b = A.load(tmp_path / "o.wav")
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-4)


@pytest.mark.parametrize("total, window, overlap", [(10, 20, 5), (100, 30, 10), (101, 30, 0), (1000, 300, 50)])
def test_chunk_spans_cover_everything(total, window, overlap):
    spans = A.chunk_spans(total, window, overlap)
    covered = np.zeros(total, bool)
    for s, e in spans:
        assert 0 <= s < e <= total and e - s <= window
        covered[s:e] = True
    assert covered.all() and spans[0][0] == 0 and spans[-1][1] == total
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s1 > s0 and e0 - s1 >= overlap


def test_stitch_recovers_consistent_signal_and_blends_disagreement():
    total, window, overlap = 250, 80, 20
    spans = A.chunk_spans(total, window, overlap)
    signal = np.sin(np.linspace(0, 12, total))[:, None] * np.ones((1, 4))
    parts = [signal[s:e] for s, e in spans]
    np.testing.assert_allclose(A.stitch(parts, spans, total), signal, atol=1e-12)
    # two windows that disagree by a constant: the result moves monotonically between them in the overlap
    spans2 = [(0, 60), (40, 100)]
    out = A.stitch([np.zeros((60, 1)), np.ones((60, 1))], spans2, 100)[:, 0]
    assert out[:40].max() == 0 and out[60:].min() == 1
    assert np.all(np.diff(out[40:60]) > 0)


def test_chunk_audio_windows():
    a = Audio(tone(75.0))
    chunks = A.chunk_audio(a, window_s=30, overlap_s=1)
    assert [round(c.duration, 3) for _, c in chunks] == [30.0, 30.0, 30.0]
    assert chunks[-1][0] + chunks[-1][1].num_samples == a.num_samples
