import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from avitalk.errors import FlameModelError
from avitalk.flame import FlameModel
from avitalk.flame.convert import convert_flame_pkl, safe_load_pickle


# ------------------------------------------------------------------------------------------ converter
def _dump_with_fake_chumpy(d: dict, path, chumpy_keys=("v_template", "shapedirs", "posedirs")) -> None:
    """Pickle like the official files: some arrays wrapped in chumpy.ch.Ch objects (protocol 2)."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:  # the shape of chumpy's Ch state: __dict__ minus weakrefs, the array under 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = ch_mod
    try:
        wrapped = {k: (Ch(v) if k in chumpy_keys else v) for k, v in d.items()}
        with open(path, "wb") as f:
            pickle.dump(wrapped, f, protocol=2)
    finally:  # chumpy is "not installed" again when we load
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_convert_fake_chumpy_pickle_without_chumpy(tmp_path, fake_flame_dict):
    d = fake_flame_dict()
    _dump_with_fake_chumpy(d, tmp_path / "generic_model.pkl")
    assert "chumpy" not in sys.modules
    with open(tmp_path / "FLAME_masks.pkl", "wb") as f:
        pickle.dump({"lips": np.arange(10), "face": np.arange(50)}, f, protocol=2)
    out = convert_flame_pkl(tmp_path / "generic_model.pkl", tmp_path / "flame.npz", masks_path=tmp_path / "FLAME_masks.pkl")
    m = FlameModel.load(out)
    assert (m.n_shape, m.n_exp, m.num_vertices, m.num_joints) == (300, 100, 120, 5)
    np.testing.assert_allclose(m.v_template.numpy(), d["v_template"], atol=1e-7)
    np.testing.assert_allclose(m.exprdirs.numpy(), d["shapedirs"][:, :, 300:], atol=1e-7)
    np.testing.assert_allclose(m.J_regressor.numpy(), d["J_regressor"].toarray(), atol=1e-7)
    assert m.parents.tolist() == [-1, 0, 1, 1, 1]
    assert m.region("lips").tolist() == list(range(10))
    with pytest.raises(FlameModelError, match="no region 'nose'"):
        m.region("nose")


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_forbidden_classes_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"v_template": _Evil(f"touch {marker}")}, f, protocol=2)
    with pytest.raises(FlameModelError, match=r"refusing to unpickle (posix|os)\.system"):
        convert_flame_pkl(bad, tmp_path / "out.npz")
    assert not marker.exists() and not (tmp_path / "out.npz").exists()
    with open(bad, "wb") as f:
        pickle.dump({"x": eval}, f)
    with pytest.raises(FlameModelError, match="builtins.eval"):
        safe_load_pickle(bad)


def test_converter_rejects_non_flame(tmp_path):
    p = tmp_path / "x.pkl"
    with open(p, "wb") as f:
        pickle.dump({"foo": np.zeros(3)}, f)
    with pytest.raises(FlameModelError, match="missing v_template"):
        convert_flame_pkl(p, tmp_path / "o.npz")
    p.write_bytes(b"garbage")
    with pytest.raises(FlameModelError, match="not a readable FLAME pickle"):
        convert_flame_pkl(p, tmp_path / "o.npz")


def test_lbs_matches_smplx_flame(tmp_path, fake_flame_dict):
    """Our FlameModel on a converted file == smplx.FLAME on the same model in smplx's own file format."""
    import smplx

    d = fake_flame_dict(V=150, seed=1)
    _dump_with_fake_chumpy(d, tmp_path / "official.pkl")
    ours = FlameModel.load(convert_flame_pkl(tmp_path / "official.pkl", tmp_path / "flame.npz"))
    smplx_dir = tmp_path / "smplx"
    smplx_dir.mkdir()
    with open(smplx_dir / "FLAME_NEUTRAL.pkl", "wb") as f:  # plain arrays, the layout smplx reads
        pickle.dump(d, f, protocol=2)
    with open(smplx_dir / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": np.arange(5), "lmk_b_coords": np.full((5, 3), 1 / 3)}, f, protocol=2)
    ref = smplx.FLAME(model_path=str(smplx_dir), num_betas=300, num_expression_coeffs=100, batch_size=4)
    g = torch.Generator().manual_seed(0)
    B = 4
    shape, expr = torch.randn(B, 300, generator=g), torch.randn(B, 100, generator=g)
    poses = [torch.randn(B, 3, generator=g) * 0.3 for _ in range(5)]
    with torch.no_grad():
        want = ref(betas=shape, expression=expr, global_orient=poses[0], neck_pose=poses[1], jaw_pose=poses[2],
                   leye_pose=poses[3], reye_pose=poses[4]).vertices
        got = ours(shape=shape, expression=expr, global_pose=poses[0], neck_pose=poses[1], jaw_pose=poses[2],
                   eye_pose=torch.cat(poses[3:], 1))
    assert got.shape == (B, 150, 3)
    assert torch.max(torch.abs(got - want)).item() < 1e-5


# ------------------------------------------------------------------------------------------ model API
def test_model_save_load_roundtrip_and_errors(tmp_path, standin):
    p = standin.save(tmp_path / "head.npz")
    m = FlameModel.load(p)
    assert m.num_vertices == standin.num_vertices and m.regions == standin.regions
    np.testing.assert_array_equal(m.faces, standin.faces)
    with pytest.raises(FlameModelError, match="no such file"):
        FlameModel.load(tmp_path / "nope.npz")
    (tmp_path / "m.pkl").write_bytes(b"x")
    with pytest.raises(FlameModelError, match="must be converted first"):
        FlameModel.load(tmp_path / "m.pkl")
    z = dict(np.load(p))
    z["lbs_weights"] = z["lbs_weights"][:, :3]
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(FlameModelError, match="lbs_weights must have shape"):
        FlameModel.load(tmp_path / "bad.npz")


def test_forward_padding_batching_and_errors(standin):
    e = torch.randn(3, 20) * 0.5
    a = standin(expression=e)
    b = standin(expression=torch.cat([e, torch.zeros(3, 30)], 1))
    assert a.shape == (3, standin.num_vertices, 3) and torch.allclose(a, b)
    jaw = torch.tensor([[0.2, 0.0, 0.0]])
    c = standin(expression=e, jaw_pose=jaw)  # a single pose broadcasts over the batch
    assert torch.allclose(c[1], standin(expression=e[1:2], jaw_pose=jaw)[0], atol=1e-6)
    with pytest.raises(FlameModelError, match="has 60 values but the model"):
        standin(expression=torch.zeros(1, 60))
    with pytest.raises(FlameModelError, match="batch size 2 does not match 3"):
        standin(expression=e, jaw_pose=torch.zeros(2, 3))


def test_sequence_vertices_matches_forward(standin):
    from avitalk.flame.standin import demo_sequence

    seq = demo_sequence(1.0)
    v = standin.sequence_vertices(seq, batch_size=7)
    ref = standin(expression=torch.as_tensor(seq.expression), jaw_pose=torch.as_tensor(seq.jaw_pose)).detach().numpy()
    np.testing.assert_allclose(v, ref, atol=1e-6)
