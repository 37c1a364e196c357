"""Image-based LSE: SyncNet's architecture, the safe loader, the crops and the window alignment of the scorer."""


import numpy as np
import pytest
import torch
from torch import nn

from avitalk.errors import CheckpointError, SequenceError
from avitalk.eval.syncnet import CROP_SIZE, SyncNet, SyncNetScorer, crop_box, crop_frames, load_syncnet, project


def test_syncnet_shapes_and_loader(tmp_path):
    net = SyncNet()
    with torch.no_grad():
        assert net.eval().forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    # the release's parameter layout: the stream names with Sequential indices
    keys = set(net.state_dict())
    assert {"netcnnaud.0.weight", "netcnnlip.0.weight", "netfcaud.3.weight", "netfclip.1.running_mean"} <= keys
    assert net.state_dict()["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)

    path = tmp_path / "syncnet_v2.model"
    torch.save(net.state_dict(), path)
    loaded = load_syncnet(path)
    x = torch.rand(1, 3, 5, 224, 224) * 255
    with torch.no_grad():
        np.testing.assert_allclose(loaded.forward_lip(x), net.forward_lip(x), rtol=1e-5, atol=1e-5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "wrapped.pt")
    load_syncnet(tmp_path / "wrapped.pt")  # a wrapped / DataParallel state dict loads too
    torch.save(net.state_dict(), tmp_path / "legacy.model", _use_new_zipfile_serialization=False)
    load_syncnet(tmp_path / "legacy.model")  # the release file predates torch's zip format
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        load_syncnet(tmp_path / "junk.model")

    with pytest.raises(CheckpointError, match="no such SyncNet"):
        load_syncnet(tmp_path / "missing.model")
    sd = net.state_dict()
    sd.pop("netfclip.3.weight")
    torch.save(sd, tmp_path / "partial.model")
    with pytest.raises(CheckpointError, match=r"missing \['netfclip.3.weight'\]"):
        load_syncnet(tmp_path / "partial.model")
    sd = net.state_dict()
    sd["netcnnaud.0.weight"] = torch.zeros(64, 1, 5, 5)
    torch.save(sd, tmp_path / "wrong.model")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_syncnet(tmp_path / "wrong.model")


class _Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_loader_never_unpickles_code(tmp_path, capsys):
    torch.save({"w": _Boom()}, tmp_path / "evil.model")
    with pytest.raises(CheckpointError, match="without unpickling"):
        load_syncnet(tmp_path / "evil.model")
    assert "unpickled!" not in capsys.readouterr().out


def test_crop_follows_syncnet_track_geometry():
    from avitalk.flame import FlameModel
    from avitalk.render.renderer import Camera

    model = FlameModel.standin()
    tmpl = model.v_template.numpy()
    cam = Camera.frontal(tmpl[model.region("face")])
    face = project(cam, tmpl[model.region("face")], 256, 256)
    lips = project(cam, tmpl[model.region("lips")], 256, 256).mean(0)
    cx, cy, half = crop_box(model, cam, 256)
    s = (face.max(0) - face.min(0)).max() / 2
    assert half == pytest.approx(1.4 * s)
    # the box spans the face box's top edge to 1.8 s below its centre, so the mouth sits in its lower half
    assert cy - half == pytest.approx(face.min(0)[1] + (face.max(0)[1] - face.min(0)[1]) / 2 - s)
    assert cy < lips[1] < cy + half and abs(lips[0] - cx) < 0.1 * half
    mx, my, _ = crop_box(model, cam, 256, crop="mouth")
    assert (mx, my) == pytest.approx(tuple(lips))
    with pytest.raises(ValueError):
        crop_box(model, cam, 256, crop="eyes")

    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48] = 200
    out = crop_frames(frames, (32.0, 32.0, 16.0), out=32)  # exactly the bright square
    assert out.shape == (2, 32, 32, 3) and out.min() >= 195
    out = crop_frames(frames, (8.0, 8.0, 16.0), out=32, fill=(9, 9, 9))  # partly off the image: padded
    assert (out[:, :6, :6] == 9).all() and out[:, -6:, -6:].min() >= 195 and (out[:, 10:14, 10:14] == 0).all()
    with pytest.raises(SequenceError):
        crop_frames(np.zeros((4, 4)), (1, 1, 1))


class _Loudness(nn.Module):
    """A stand-in sync network whose embeddings are the shape of loudness over the window: mean brightness per frame
    on the lip side, MFCC energy per 4 MFCC frames on the audio side (centred, unit norm)."""

    @staticmethod
    def _unit(x):
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def forward_lip(self, x):  # [B, 3, 5, H, W]
        return self._unit(x.mean(dim=(1, 3, 4)))

    def forward_aud(self, m):  # [B, 1, 13, 20]
        return self._unit(m[:, 0, 0].reshape(len(m), 5, 4).mean(-1))


@pytest.mark.parametrize("shift", [0, 2, -3])
def test_scorer_recovers_a_planted_offset(shift):
    rng = np.random.default_rng(1)
    T = 60
    env = np.exp(rng.uniform(np.log(0.02), 0, T + 20))  # loudness per 40 ms frame
    samples = np.concatenate([rng.normal(size=640) * e for e in env[10 : 10 + T]]).astype(np.float32) * 0.5
    # frame k shows the loudness of audio frame k + shift (log scale, as MFCC energy is)
    bright = np.log(env[10 + shift : 10 + shift + T])
    bright = (bright - bright.min()) / np.ptp(bright) * 200 + 20
    crops = np.repeat(bright[:, None, None, None], 3, -1) * np.ones((T, 8, 8, 3))
    r = SyncNetScorer(_Loudness(), batch_size=7).score(samples, crops.astype(np.uint8))
    assert r.offset == -shift
    assert r.lse_c > 0.3
    with pytest.raises(SequenceError, match="shorter"):
        SyncNetScorer(_Loudness()).score(samples[:1000], crops[:3].astype(np.uint8))


def test_scorer_with_syncnet_on_rendered_crops():
    from avitalk.flame import FlameModel
    from avitalk.eval.syncnet import CropRenderer

    model = FlameModel.standin()
    T = 12
    motion = np.zeros((T, 53), np.float32)
    motion[:, -3] = 0.25 * np.abs(np.sin(np.arange(T) / 2))
    with CropRenderer(model) as cr:
        crops = cr(motion)
    assert crops.shape == (T, CROP_SIZE, CROP_SIZE, 3)
    # the face is inside the crop with background around it (no padding), and the mouth moves in its lower half
    bg = crops[0, 0, 0]
    assert (crops[:, :, :4] == bg).all() and not (crops[:, CROP_SIZE // 2] == bg).all()
    moving = np.abs(crops.astype(int) - crops[:1].astype(int)).sum((0, 3))
    ys, xs = np.nonzero(moving > 30)
    assert ys.mean() > CROP_SIZE * 0.5 and abs(xs.mean() - CROP_SIZE / 2) < 12
    torch.manual_seed(0)
    res = SyncNetScorer(SyncNet(), batch_size=4).score(np.random.default_rng(0).normal(size=T * 640) * 0.1, crops)
    assert np.isfinite(res.lse_d) and res.lse_c >= 0 and -15 <= res.offset <= 15 and len(res.distances) == 31
