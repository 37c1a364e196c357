"""AVITalkingPipeline and `avitalk run` / `avitalk synthesize` on a tiny pipeline with random weights."""

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf

from avitalk.errors import CheckpointError, InstructionError
from avitalk.top.pipeline import AVITalkingPipeline
from avitalk.types import Audio

from .conftest import build_tiny_pipeline

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe") / "ck"
    build_tiny_pipeline().save_pretrained(d)
    return d


@pytest.fixture()
def speech():
    t = np.arange(int(1.6 * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return Audio(x.astype(np.float32))


def test_checkpoint_folder_is_complete_fp16_and_reloads(tiny_ckpt, speech):
    from safetensors import safe_open

    for need in ("config.yaml", "README.md", "decoder.safetensors", "prior.safetensors", "style_encoder.safetensors",
                 "qformer.safetensors", "lm", "tokenizer", "adapter/adapter_config.json"):
        assert (tiny_ckpt / need).exists(), need
    with safe_open(str(tiny_ckpt / "decoder.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    assert not list(tiny_ckpt.rglob("*.bin")) and not list(tiny_ckpt.rglob("*.pkl"))  # nothing to unpickle
    pipe = AVITalkingPipeline.from_pretrained(tiny_ckpt)
    again = AVITalkingPipeline.from_pretrained(tiny_ckpt)
    a = pipe(speech, seed=3)
    b = again(speech, seed=3)
    assert a.instruction_source == "stage1" and a.instruction.text == b.instruction.text
    assert set(a.timings) == {"audio_encoder_s", "stage1_s", "stage2_s"}
    assert len(a.sequences) == 1 and a.sequences[0].num_frames == speech.num_frames()
    np.testing.assert_allclose(a.sequences[0].expression, b.sequences[0].expression, atol=1e-5)


def test_batched_instructions_and_motion_equal_clip_by_clip(tiny_ckpt):
    from .conftest import speechlike

    pipe = AVITalkingPipeline.from_pretrained(tiny_ckpt)
    auds = [Audio(speechlike(s, seed=k)) for k, s in enumerate((1.0, 2.3, 1.6, 3.1))]  # lengths differ: padding
    feats = [pipe.encode(a) for a in auds]
    one = [pipe.instruct(a, features=f).text for a, f in zip(auds, feats)]
    assert [i.text for i in pipe.instruct_many(auds, feats, batch_size=3)] == one
    texts = ["A happy person speaks.", "A sad person speaks.", "An angry person speaks.", "A person speaks."]
    seeds = [3, 5, 11, 7]
    many = pipe.synthesize_many(auds, texts, seeds=seeds, num_samples=2, features=feats, batch_size=3)
    for k, (a, t, f) in enumerate(zip(auds, texts, feats)):
        ref = pipe.synthesize(a, t, num_samples=2, seed=seeds[k], features=f)
        assert len(many[k]) == 2 and many[k][0].num_frames == a.num_frames()
        for x, y in zip(many[k], ref):
            np.testing.assert_allclose(x.motion(), y.motion(), atol=1e-5)
    assert not np.allclose(many[0][0].motion(), many[0][1].motion())  # samples still differ
    assert len(pipe.synthesize_many(auds[:2], texts[:2])) == 2  # no seeds: drawn like synthesize(seed=None)
    with pytest.raises(ValueError, match="2 clips but 3 instructions"):
        pipe.synthesize_many(auds[:2], texts[:3])


def test_given_instruction_replaces_stage1_and_samples_differ(tiny_ckpt, speech):
    pipe = AVITalkingPipeline.from_pretrained(tiny_ckpt, stage1=False)
    assert pipe.instructor is None
    out = pipe(speech, "A furious man speaks with brow strongly lowered.", num_samples=3, seed=1)
    assert out.instruction_source == "given" and "stage1_s" not in out.timings
    assert (out.instruction.emotion, out.instruction.intensity) == ("angry", "strong")
    assert len(out.sequences) == 3
    assert not np.allclose(out.sequences[0].expression, out.sequences[1].expression)
    same = pipe(speech, "A furious man speaks with brow strongly lowered.", num_samples=3, seed=1)
    np.testing.assert_array_equal(same.sequences[2].expression, out.sequences[2].expression)
    with pytest.raises(InstructionError, match="empty"):
        pipe(speech, "   ")
    with pytest.raises(CheckpointError, match="no stage 1"):
        pipe(speech)
    # device placement moves the trained networks; seeded noise is drawn on the CPU, so a seed means the same styles
    import torch

    assert pipe.to(torch.device("cpu")) is pipe and pipe.device.type == "cpu"
    moved = pipe(speech, "A furious man speaks with brow strongly lowered.", num_samples=3, seed=1)
    np.testing.assert_array_equal(moved.sequences[2].expression, out.sequences[2].expression)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "decoder.safetensors").unlink(), "missing component decoder"),
    (lambda d: shutil.rmtree(d / "lm"), "missing stage-1 component lm"),
    (lambda d: (d / "config.yaml").unlink(), "missing config.yaml"),
    (lambda d: (d / "prior.safetensors").write_bytes(b"not safetensors"), "component prior is not a readable"),
    (lambda d: (d / "adapter" / "adapter_config.json").write_text("{broken"), "adapter"),
])
def test_damaged_checkpoint_names_the_component(tiny_ckpt, tmp_path, damage, message):
    d = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, d)
    damage(d)
    with pytest.raises(CheckpointError, match=message):
        AVITalkingPipeline.from_pretrained(d)


def test_mismatched_shapes_are_refused(tiny_ckpt, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, d)
    cfg = OmegaConf.load(d / "config.yaml")
    cfg.stage2.decoder.d_model = 48
    (d / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(CheckpointError, match="decoder does not match"):
        AVITalkingPipeline.from_pretrained(d)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        AVITalkingPipeline.from_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ command line
@pytest.fixture()
def run_cli(cli):
    from types import SimpleNamespace

    def call(args):
        code, out, err = cli(*args)
        return SimpleNamespace(code=code, out=out, err=err)

    return call


@pytest.fixture()
def speech_wav(tmp_path, speech):
    from avitalk.audio import save_wav

    return save_wav(tmp_path / "speech.wav", speech)


def test_run_writes_every_output_and_the_edit_loop_works(run_cli, tiny_ckpt, speech_wav, tmp_path):
    from avitalk.render.video import probe_video
    from avitalk.types import FlameSequence

    out = tmp_path / "out"
    r = run_cli(["run", str(speech_wav), "-o", str(out), "--checkpoint", str(tiny_ckpt), "--size", "64", "--quiet"])
    assert r.code == 0, r.err
    for f in ("instruction.txt", "flame.npz", "video.mp4", "run.json"):
        assert (out / f).is_file(), f
    info = json.loads((out / "run.json").read_text())
    assert info["instruction"]["source"] == "stage1" and info["seed"] == 0
    heard = info["instruction"]["heard"]  # the emotion head's [emotion, probability] pairs, most likely first
    p = [x[1] for x in heard]
    assert len({x[0] for x in heard}) == 8 and abs(sum(p) - 1) < 1e-3 and p == sorted(p, reverse=True)
    for k in ("audio_encoder_s", "stage1_s", "stage2_s", "flame_s", "render_s", "video_s", "total_s"):
        assert info["timings"][k] >= 0, k
    v = probe_video(out / "video.mp4")
    assert v["frames"] == FlameSequence.load(out / "flame.npz").num_frames and v["audio_codec"] == "aac"
    # the edit loop: change the instruction, run again from the file
    edited = tmp_path / "edited.txt"
    edited.write_text("A delighted woman speaks with lip corners strongly pulled up.\n")
    out2 = tmp_path / "out2"
    r = run_cli(["run", str(speech_wav), "-o", str(out2), "--checkpoint", str(tiny_ckpt), "--instruction-file",
             str(edited), "--samples", "2", "--no-render", "--json"])
    assert r.code == 0, r.err
    info2 = json.loads(r.out)
    assert info2["instruction"]["source"] == "given" and info2["instruction"]["emotion"] == "happy"
    assert info2["instruction"]["heard"] is None  # stage 1 did not listen
    assert (out2 / "instruction.txt").read_text().strip() == edited.read_text().strip()
    assert sorted(p.name for p in out2.iterdir()) == ["flame_0.npz", "flame_1.npz", "instruction.txt", "run.json"]
    # an existing OUT is kept unless --overwrite
    r = run_cli(["synthesize", str(speech_wav), "-o", str(out), "--checkpoint", str(tiny_ckpt), "-i", "A sad man speaks.",
             "--no-render", "-q"])
    assert r.code == 2 and "--overwrite" in r.err and (out / "video.mp4").exists()
    r = run_cli(["synthesize", str(speech_wav), "-o", str(out), "--checkpoint", str(tiny_ckpt), "-i", "A sad man speaks.",
             "--no-render", "-q", "--overwrite"])
    assert r.code == 0, r.err
    assert not (out / "video.mp4").exists() and "sad" in (out / "instruction.txt").read_text()


def _video_without_audio(path):
    from avitalk.render.video import write_video

    write_video(path, (np.zeros((32, 32, 3), np.uint8) for _ in range(10)), fps=25)
    return path


@pytest.mark.parametrize("make_args, message", [
    (lambda t, w, c: ["run", str(t / "nope.wav"), "-o", str(t / "o")], "no such file"),
    (lambda t, w, c: ["run", str(t), "-o", str(t / "o")], "is a directory"),
    (lambda t, w, c: ["run", str(_video_without_audio(t / "v.mp4")), "-o", str(t / "o")], "no decodable audio"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "-f", str((t / "e.txt", (t / "e.txt").write_text(" \n"))[0])], "is empty"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "-f", str(t / "missing.txt")], "no such instruction file"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "-i", "A sad man.", "-f", str(w)], "not both"),
    (lambda t, w, c: ["synthesize", str(w), "-o", str(t / "o")], "give the instruction"),
    (lambda t, w, c: ["run", str(w), "-o", str(w)], "not a folder"),
    (lambda t, w, c: ["run", str(w), "-o", str(w / "sub")], "cannot write"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "--size", "63"], "even number"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "--checkpoint", str(t / "none")], "no such checkpoint"),
    (lambda t, w, c: ["run", str(w), "-o", str(t / "o"), "--flame-model", str(w)], "not a readable model"),
])
def test_run_bad_input_one_line_nothing_left(run_cli, tiny_ckpt, speech_wav, tmp_path, make_args, message):
    args = make_args(tmp_path, speech_wav, tiny_ckpt)
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(tiny_ckpt)]
    r = run_cli(args + ["--size", "64"] if "--size" not in args else args)
    assert r.code != 0
    assert message.lower() in r.err.lower(), r.err
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message.lower() in errors[0].lower() and "Traceback" not in r.err, r.err
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no temporary folder left behind


def test_instruct_command_with_a_pipeline_checkpoint(run_cli, tiny_ckpt, speech_wav, tmp_path):
    from avitalk.audio import save_wav

    r = run_cli(["instruct", str(speech_wav), "--checkpoint", str(tiny_ckpt), "--samples", "2", "--json"])
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert len(got) == 2 and all(g["text"] for g in got)
    assert got[0]["heard"] == got[1]["heard"] and len(got[0]["heard"]) == 8  # one listening, two sampled texts
    assert got[0]["heard"][0][1] >= got[0]["heard"][1][1]
    r = run_cli(["instruct", str(speech_wav), "--checkpoint", str(tiny_ckpt)])
    assert r.code == 0 and len(r.out.strip().splitlines()) == 1 and "heard: " in r.err  # stdout: the text alone
    t = np.arange(31 * 16000) / 16000
    long = save_wav(tmp_path / "long.wav", Audio((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)))
    r = run_cli(["instruct", str(long), "--checkpoint", str(tiny_ckpt)])
    assert r.code == 2 and "the limit is 30 s" in r.err and "--max-duration" in r.err
    r = run_cli(["instruct", str(long), "--checkpoint", str(tiny_ckpt), "--max-duration", "40"])
    assert r.code == 0, r.err  # stage 1 reads the first 30 s


def test_the_embedded_default_checkpoint_runs_offline():
    from avitalk.data.synthtalk import say
    from avitalk.top.pipeline import DEFAULT_CHECKPOINT

    size = sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.rglob("*") if f.is_file())
    assert size < 20e6, f"default checkpoint is {size / 1e6:.1f} MB (limit 20 MB)"
    pipe = AVITalkingPipeline.from_pretrained()
    metrics = json.loads((DEFAULT_CHECKPOINT / "metrics.json").read_text())
    card = (DEFAULT_CHECKPOINT / "README.md").read_text()
    assert "synthetic" in card.lower()
    if (metrics["data"].get("real_speech") or {}).get("clips"):  # trained on RAVDESS too: its licence is inherited
        assert "CC BY-NC-SA 4.0" in card and "Livingstone" in card
    assert metrics["stage1"]["with_speech"]["emotion_accuracy"] > 0.5
    # avitalk live decodes with the default's live decoder (stage2.train.stream), not the offline one
    synth = pipe.synthesizer
    assert synth.live_decoder is synth.stream_decoder is not None and synth.stream_decoder is not synth.decoder
    clip = say("We are going to the seaside together next week, all of us.", "angry", 3)
    out = pipe(Audio(clip["audio"]), seed=0)
    assert out.instruction.emotion == "angry", out.instruction.text  # an unseen test speaker, strongly angry
    seq = out.sequences[0]
    assert abs(seq.num_frames - clip["sequence"].num_frames) <= 1 and np.isfinite(seq.expression).all()


def test_stage1_llm_in_bfloat16_reads_the_same_emotion():
    """``pipe.to(device, lm_dtype=torch.bfloat16)`` (what a 7B LLM wants on a GPU) casts the LLM and its LoRA, keeps
    the Q-Former in float32 and hands the speech tokens over in the LLM's dtype."""
    import torch

    from avitalk.data.synthtalk import say

    clip = say("We are going to the seaside together next week, all of us.", "angry", 3)
    pipe = AVITalkingPipeline.from_pretrained()
    full = pipe.instruct(Audio(clip["audio"]))
    pipe.to("cpu", lm_dtype=torch.bfloat16)
    lm = pipe.instructor.lm.model
    assert lm.lm_head.weight.dtype == torch.bfloat16
    assert next(m.lora_A for m in lm.modules() if getattr(m, "lora_A", None) is not None).dtype == torch.bfloat16
    assert next(pipe.instructor.qformer.parameters()).dtype == torch.float32
    half = pipe.instruct(Audio(clip["audio"]))
    assert half.emotion == full.emotion == "angry", (full.text, half.text)
