import numpy as np
import pytest
import torch

from avitalk import audio as audio_io
from avitalk.data.dataset import FeatureCache, TalkingFaceDataset, collate
from avitalk.data.manifest import read_manifest
from avitalk.data.synthtalk import generate
from avitalk.errors import DatasetError
from avitalk.types import FlameSequence


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    generate(root, 16, seed=7, workers=1, progress=False)
    return root


def test_crops_align_motion_audio_and_features(corpus, tmp_path):
    cache = FeatureCache(tmp_path / "cache", "fake-encoder/v1")
    clips = read_manifest(corpus, "train")
    for c in clips:  # "features": 50 Hz rows holding their own time index
        n = int(round(c.duration * 50))
        cache.put(c.id, np.repeat(np.arange(n, dtype=np.float32)[:, None], 4, 1))
    ds = TalkingFaceDataset(corpus, "train", crop_frames=20, features=cache, seed=1)
    for i in range(len(ds)):
        it = ds[i]
        c = clips[i]
        s = it["start_frame"]
        seq = FlameSequence.load(corpus / c.flame)
        np.testing.assert_allclose(it["motion"].numpy(), seq.motion()[s : s + 20])
        full = audio_io.load(corpus / c.audio).samples
        np.testing.assert_allclose(it["audio"].numpy(), full[s * 640 : (s + 20) * 640])
        assert it["features"][0, 0].item() == 2 * s and it["features"].shape == (40, 4)
        assert it["mask"].all() and it["instruction"] in c.instructions


def test_whole_clips_pad_with_masks(corpus):
    ds = TalkingFaceDataset(corpus, "train", crop_frames=None, instruction="first")
    batch = collate([ds[0], ds[1], ds[2]])
    lengths = [ds.clips[i].extra["num_frames"] for i in range(3)]
    assert batch["motion"].shape == (3, max(lengths), 53)
    assert batch["mask"].sum(1).tolist() == lengths
    assert batch["audio"].shape == (3, max(lengths) * 640)
    assert torch.all(batch["motion"][~batch["mask"]] == 0)
    assert batch["instruction"][0] == ds.clips[0].instructions[0]
    assert batch["emotion"].dtype == torch.int64


def test_feature_cache_behaviour(tmp_path):
    cache = FeatureCache(tmp_path, "enc a/b")
    calls = []
    f = cache.get_or_compute("c1", lambda: calls.append(1) or np.ones((3, 2)))
    g = cache.get_or_compute("c1", lambda: calls.append(1) or np.zeros((3, 2)))
    assert calls == [1] and np.array_equal(f, g) and f.dtype == np.float32
    assert FeatureCache(tmp_path, "other").get("c1") is None  # keys never share features
    cache.path("c1").write_bytes(b"corrupt")
    assert cache.get("c1") is None


def test_dataset_errors(corpus, tmp_path):
    with pytest.raises(DatasetError, match="no manifest.jsonl"):
        TalkingFaceDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        TalkingFaceDataset(corpus, "dev")
    ds = TalkingFaceDataset(corpus, "train", features=FeatureCache(tmp_path, "empty"))
    with pytest.raises(DatasetError, match="no cached features"):
        ds[0]
