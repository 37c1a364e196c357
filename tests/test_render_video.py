import numpy as np
import pytest

from avitalk.errors import RenderError
from avitalk.flame.standin import demo_sequence
from avitalk.render import Camera, Renderer, renderer_for_model, vertex_normals_fn
from avitalk.render.video import probe_video, write_video
from avitalk.types import Audio

from .conftest import tone


def test_vertex_normals_of_a_cube_point_outwards():
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    n = vertex_normals_fn(f, 8)(v[None])[0]
    assert np.all(np.sum(n * v, 1) > 0) and np.allclose(np.linalg.norm(n, axis=1), 1)


def test_batches_equal_single_frames(standin):
    seq = demo_sequence(0.4)
    verts = standin.sequence_vertices(seq)
    with renderer_for_model(standin, size=96) as r:
        batch = r.render_frames(verts, batch_size=4)
        single = np.stack([r.render(v) for v in verts])
    assert batch.shape == (10, 96, 96, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, single)
    assert not np.array_equal(batch[0], batch[3])  # the jaw moved


def test_renderer_rejects_bad_input(standin):
    with pytest.raises(RenderError, match="image size"):
        Renderer(standin.faces, standin.num_vertices, size=8)
    with renderer_for_model(standin, size=32) as r:
        with pytest.raises(RenderError, match=r"vertices must be \[T, "):
            r.render_frames(np.zeros((2, 10, 3)))
        bad = standin.v_template.numpy()[None].copy()
        bad[0, 0, 0] = np.nan
        with pytest.raises(RenderError, match="NaN"):
            r.render_frames(bad)


def test_camera_frames_the_vertices():
    pts = np.random.default_rng(0).normal(size=(100, 3)) * [0.1, 0.1, 0.05]
    cam = Camera.frontal(pts)
    clip = (cam.proj(1.0) @ cam.view() @ np.c_[pts, np.ones(100)].T).T
    ndc = clip[:, :2] / clip[:, 3:]
    assert np.abs(ndc).max() < 1.0 and np.abs(ndc).max() > 0.6


def test_video_roundtrip_with_audio(tmp_path):
    frames = [np.full((48, 64, 3), i * 10, np.uint8) for i in range(20)]
    audio = Audio(tone(1.0))  # longer than the 0.8 s of video: trimmed
    out = write_video(tmp_path / "v.mp4", frames, fps=25, audio=audio)
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (20, 64, 48, 25.0)
    assert info["codec"] == "h264" and info["audio_codec"] == "aac" and info["audio_rate"] == 16000
    assert info["audio_duration"] == pytest.approx(0.8, abs=0.07)
    assert info["audio"].std() > 0.05  # real sound, not silence
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp files left


def test_video_errors_leave_no_file(tmp_path):
    with pytest.raises(RenderError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((33, 32, 3), np.uint8)])
    with pytest.raises(RenderError, match="no frames"):
        write_video(tmp_path / "none.mp4", [])
    with pytest.raises(RenderError, match="uint8"):
        write_video(tmp_path / "f.mp4", [np.zeros((32, 32, 3), np.float32)])
    assert list(tmp_path.iterdir()) == []


def test_open_mouth_shows_teeth_and_tongue_closed_mouth_does_not(standin):
    """A close-up of the lips: an open 'aa' shows ivory teeth and the pink tongue inside a dark mouth; closed lips
    ('m b p') and the face at rest show none of them."""
    from avitalk.flame.standin import expression_from_activations as acts
    from avitalk.types import FlameSequence

    ex = np.stack([acts({"VIS_AA": 1.0}), acts({"VIS_MBP": 1.0}), acts({})]).astype(np.float32)
    jaw = np.zeros((3, 3), np.float32)
    jaw[0, 0] = 0.22
    verts = standin.sequence_vertices(FlameSequence(ex, jaw, fps=25))
    with renderer_for_model(standin, size=256) as r:
        r.set_camera(Camera.frontal(standin.v_template.numpy()[standin.region("lips")], margin=1.5))
        frames = r.render_frames(verts).astype(float)

    def counts(img):
        R, G, B = img[..., 0], img[..., 1], img[..., 2]
        ivory = (R > 170) & (G > 0.92 * R) & (B > 0.8 * R) & (B < R)  # teeth (skin is redder, the background bluer)
        dark = (R + G + B) < 150  # the mouth's inside
        return ivory.sum(), dark.sum()

    (t_open, d_open), (t_closed, d_closed), (t_rest, d_rest) = map(counts, frames)
    assert t_open > 400 and d_open > 1500
    assert t_closed < 20 and t_rest < 20 and d_closed < 600 and d_open > 5 * d_closed
