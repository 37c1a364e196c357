import numpy as np
import pytest
import torch

from avitalk.encoders import build_encoder, to_motion_rate
from avitalk.errors import AudioError, CheckpointError
from avitalk.types import Audio

TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, max_source_positions=1500)


def _speechlike(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return Audio((0.2 * np.sin(2 * np.pi * 150 * t) * (rng.random(len(t)) > 0.2) + 0.02 * rng.normal(size=len(t))).astype(np.float32))


@pytest.fixture(scope="module")
def ct2():
    return build_encoder("whisper_ct2")


def test_embedded_whisper_ct2_features(ct2):
    a = _speechlike(2.0)
    f = ct2.encode(a)
    assert ct2.dim == 384 and f.shape == (100, 384) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(f, ct2.encode(a))  # deterministic
    f2 = ct2.encode_batch([a, _speechlike(1.0, 1)])
    assert [x.shape[0] for x in f2] == [100, 50]
    assert ct2.key == "whisper_ct2-tiny.en-int8"


def test_long_audio_is_windowed_and_stitched(ct2):
    a = _speechlike(41.3)
    f = ct2.encode(a)
    assert f.shape == (int(round(41.3 * 50)), 384) and np.isfinite(f).all()
    # rows before the second window starts come from the first window alone: equal to encoding it by itself
    from avitalk.audio import chunk_spans

    spans = chunk_spans(a.num_samples, 30 * 16000, 2 * 16000)
    assert len(spans) == 2
    second = int(round(spans[1][0] / 16000 * 50))
    head = ct2.encode(Audio(a.samples[: 30 * 16000]))
    np.testing.assert_allclose(f[:second], head[:second], atol=1e-5)
    assert not np.allclose(f[second + 100 : 1500], head[second + 100 : 1500], atol=1e-3)  # blended there


def test_hf_backend_unpadded_forward_matches_hf_on_full_window():
    enc = build_encoder("whisper_hf", config=TINY, device="cpu")
    mel = torch.randn(1, 80, 3000)
    ours = enc.forward_unpadded(mel)
    theirs = enc.encoder(mel).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    f = enc.encode(_speechlike(3.0))
    assert f.shape == (150, 32)


def test_encoder_errors():
    with pytest.raises(CheckpointError, match="not a CTranslate2 Whisper model"):
        build_encoder("whisper_ct2:/nonexistent")
    with pytest.raises(CheckpointError, match="needs a model path"):
        build_encoder("whisper_hf")
    with pytest.raises(ValueError, match="unknown audio encoder"):
        build_encoder("wav2vec")
    # a hub id that is not on this machine fails at once, naming how to get it: nothing is downloaded at run time
    import time

    from avitalk.encoders.text import TextEncoder

    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="never downloads weights.*huggingface-cli download openai/whisper-nope"):
        build_encoder("whisper_hf:openai/whisper-nope")
    with pytest.raises(CheckpointError, match="never downloads weights"):
        TextEncoder("hf:sentence-transformers/not-here")
    assert time.perf_counter() - t < 10  # no network retries
    enc = build_encoder("whisper_hf", config=TINY)
    with pytest.raises(AudioError, match="too short"):
        enc.encode(Audio(np.zeros(100, np.float32) + 0.1))


def test_to_motion_rate():
    f = np.arange(10, dtype=np.float32)[:, None].repeat(3, 1)
    m = to_motion_rate(f, 6)  # 12 rows needed: edge-padded
    assert m.shape == (6, 3) and m[0, 0] == 0.5 and m[-1, 0] == 9.0


def test_cache_dataset_features(tmp_path):
    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import cache_dataset_features

    generate(tmp_path / "d", 4, seed=2, workers=1, progress=False)
    enc = build_encoder("whisper_hf", config=TINY)
    cache = cache_dataset_features(tmp_path / "d", enc, progress=False)
    from avitalk.data.manifest import read_manifest

    for c in read_manifest(tmp_path / "d"):
        f = cache.get(c.id)
        assert f.shape == (int(round(c.duration * 50)), 32)


def test_cache_workers_write_what_one_process_writes(tmp_path):
    """Two forked worker processes share a cache's encoding (clean, augmented and pause copies): the same features as
    one process, every clip there."""
    from avitalk.data.manifest import read_manifest
    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import augmented_id, cache_augmented_features, cache_dataset_features

    generate(tmp_path / "d", 10, seed=3, workers=1, progress=False)
    enc = build_encoder("whisper_hf", config=TINY)
    clips = read_manifest(tmp_path / "d")
    one = cache_dataset_features(tmp_path / "d", enc, tmp_path / "one", progress=False, batch_size=2, workers=1)
    two = cache_dataset_features(tmp_path / "d", enc, tmp_path / "two", progress=False, batch_size=2, workers=2)
    for c in clips:
        np.testing.assert_allclose(two.get(c.id), one.get(c.id), atol=1e-5)
    a1 = cache_augmented_features(tmp_path / "d", enc, 1, seed=1, splits=("train", "val", "test"), progress=False,
                                  workers=1)
    import shutil

    saved = {c.id: a1.get(augmented_id(c.id, 0)) for c in clips}
    shutil.rmtree(a1.dir)
    a2 = cache_augmented_features(tmp_path / "d", enc, 1, seed=1, splits=("train", "val", "test"), progress=False,
                                  workers=2)
    for c in clips:
        np.testing.assert_allclose(a2.get(augmented_id(c.id, 0)), saved[c.id], atol=1e-5)


def test_a_failing_worker_leaves_its_chunks_to_the_caller():
    """A chunk that fails in a worker is done again by the calling process, so its error reaches the caller as
    itself; the other chunks are kept."""
    from avitalk.encoders.cache import run_chunks

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    import multiprocessing

    written = multiprocessing.get_context("fork").Manager().list()  # what every process wrote

    def work(chunk):
        if 7 in chunk:
            raise ValueError("clip 7 is damaged")
        written.extend(chunk)

    # chunks 0, 2, 4 to the first worker, 1, 3, 5 to the second, which stops at chunk 3 ([6, 7])
    with pytest.raises(ValueError, match="clip 7 is damaged"):
        run_chunks([[i, i + 1] for i in range(0, 12, 2)], work, lambda i: i not in written, Bar(), workers=2)
    assert sorted(written) == [0, 1, 2, 3, 4, 5, 8, 9]
