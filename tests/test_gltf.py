"""glTF export: read the file back and rebuild every frame's vertices from its morph targets and animation."""

import numpy as np
import pytest

from avitalk.flame import FlameModel
from avitalk.flame.standin import demo_sequence
from avitalk.render.gltf import accessor_array, export_glb, read_glb


def _frames_from_glb(path):
    doc, blob = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    base = accessor_array(doc, blob, prim["attributes"]["POSITION"])
    targets = np.stack([accessor_array(doc, blob, t["POSITION"]) for t in prim["targets"]])
    sampler = doc["animations"][0]["samplers"][0]
    times = accessor_array(doc, blob, sampler["input"])
    w = accessor_array(doc, blob, sampler["output"]).reshape(len(times), len(targets))
    return doc, times, base[None] + np.einsum("tk,kvc->tvc", w, targets)


@pytest.mark.parametrize("layout", ["morph", "baked"])
def test_glb_rebuilds_the_animation(tmp_path, layout):
    seq = demo_sequence(2.0)
    model = FlameModel.standin()
    info = export_glb(seq, tmp_path / "face.glb", model, layout=layout, audio_file="face.wav")
    doc, times, frames = _frames_from_glb(tmp_path / "face.glb")
    exact = model.sequence_vertices(seq)
    err = np.linalg.norm(frames - exact, axis=-1).max() * 1000
    assert err <= info.max_error_mm + 1e-3
    assert err < (1.0 if layout == "morph" else 1e-3), err
    assert len(times) == seq.num_frames and times[1] == pytest.approx(1 / 25)
    names = doc["meshes"][0]["extras"]["targetNames"]
    assert len(names) == info.targets == (56 if layout == "morph" else seq.num_frames)
    if layout == "morph":
        assert names[0] == "AU01_inner_brow_raise" and "jaw_x" in names
    assert doc["extras"]["audio"] == "face.wav" and doc["extras"]["layout"] == layout
    for t in doc["meshes"][0]["primitives"][0]["targets"]:  # the spec requires min/max on POSITION accessors
        assert "min" in doc["accessors"][t["POSITION"]]


def test_glb_carries_the_heads_colours_and_region_materials(tmp_path):
    from avitalk.render.gltf import srgb_to_linear

    model = FlameModel.standin()
    export_glb(demo_sequence(0.5), tmp_path / "face.glb", model)
    doc, blob = read_glb(tmp_path / "face.glb")
    prims = doc["meshes"][0]["primitives"]
    names = [doc["materials"][p["material"]]["name"] for p in prims]
    assert names == ["skin", "eyes", "teeth", "lips", "mouth"]
    colours = accessor_array(doc, blob, prims[0]["attributes"]["COLOR_0"])
    np.testing.assert_allclose(colours, srgb_to_linear(model.vertex_colors), atol=1e-6)  # glTF colours are linear
    assert all(p["attributes"] == prims[0]["attributes"] and p["targets"] == prims[0]["targets"] for p in prims)
    faces = np.concatenate([accessor_array(doc, blob, p["indices"]).reshape(-1, 3) for p in prims])
    assert sorted(map(tuple, faces)) == sorted(map(tuple, np.asarray(model.faces).astype(np.uint32)))  # each face once
    ratio = lambda ids: np.median(colours[ids, 1] / colours[ids, 0])  # noqa: E731 - green / red: ivory ~1, skin < 0.7
    assert ratio(model.region("teeth")) > 0.85 and ratio(model.region("forehead")) < 0.7
    for m in doc["materials"]:
        assert m["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert srgb_to_linear([0.5])[0] == pytest.approx(0.214, abs=1e-3)


def test_glb_opens_in_trimesh_and_auto_picks_a_layout(tmp_path):
    import trimesh

    seq = demo_sequence(1.0)
    info = export_glb(seq, tmp_path / "a.glb", layout="auto", tolerance_mm=1e-6)
    assert info.layout == "baked"  # the morph layout cannot be that exact: auto bakes
    scene = trimesh.load(tmp_path / "a.glb")
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.vertices) == FlameModel.standin().num_vertices


def test_export_command(tmp_path, cli, wav_file):
    demo_sequence(1.0).save(tmp_path / "s.npz")
    code, out, err = cli("export", tmp_path / "s.npz", "-o", tmp_path / "f.glb", "--audio", wav_file())
    assert code == 0, err
    assert (tmp_path / "f.glb").is_file() and (tmp_path / "f.wav").is_file() and "morph targets" in out
    code, _, err = cli("export", tmp_path / "s.npz", "-o", tmp_path / "f.glb")
    assert code == 2 and "already exists" in err
    code, _, err = cli("export", tmp_path / "s.npz", "-o", tmp_path / "f.gltf")
    assert code == 2 and ".glb" in err
    code, _, err = cli("export", tmp_path / "none.npz", "-o", tmp_path / "g.glb")
    assert code == 2 and "none.npz" in err
