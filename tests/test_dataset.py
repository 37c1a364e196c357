import numpy as np
import pytest
import torch

from avitalk.data.dataset import FeatureCache, pad_arrays
from avitalk.data.manifest import read_manifest
from avitalk.data.synthtalk import generate
from avitalk.errors import DatasetError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    generate(root, 16, seed=7, workers=1, progress=False)
    return root


def test_pad_arrays_masks_and_cuts():
    a, b = np.ones((3, 2), np.float32), 2 * np.ones((5, 2), np.float32)
    x, m = pad_arrays([a, b])
    assert x.shape == (2, 5, 2) and m.sum(1).tolist() == [3, 5] and torch.all(x[0, 3:] == 0)
    x, m = pad_arrays([a, b], 4)
    assert x.shape == (2, 4, 2) and m.sum(1).tolist() == [3, 4]


def test_feature_cache_behaviour(tmp_path):
    cache = FeatureCache(tmp_path, "enc a/b")
    calls = []
    f = cache.get_or_compute("c1", lambda: calls.append(1) or np.ones((3, 2)))
    g = cache.get_or_compute("c1", lambda: calls.append(1) or np.zeros((3, 2)))
    assert calls == [1] and np.array_equal(f, g) and f.dtype == np.float32
    assert FeatureCache(tmp_path, "other").get("c1") is None  # keys never share features
    cache.path("c1").write_bytes(b"corrupt")
    assert cache.get("c1") is None


def test_manifest_errors(corpus, tmp_path):
    with pytest.raises(DatasetError, match="no manifest.jsonl"):
        read_manifest(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        read_manifest(corpus, "dev")
