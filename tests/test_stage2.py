import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from avitalk.errors import AudioError, CheckpointError, InstructionError
from avitalk.types import Audio

from avitalk.stage2_synthesis.decoder import TalkingDecoder
from avitalk.stage2_synthesis.prior import DiffusionPrior
from avitalk.stage2_synthesis.style_encoder import StyleEncoder
from avitalk.stage2_synthesis.synthesizer import Synthesizer

from .conftest import tiny_stage2_cfg, wake_modulation

@pytest.fixture(scope="module")
def synth():
    torch.manual_seed(0)
    s = Synthesizer.build(tiny_stage2_cfg())
    wake_modulation(s.decoder)
    return s


def speech(seconds=1.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return Audio((0.2 * np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 4 * t) > 0) + 0.01 * rng.normal(size=len(t))).astype(np.float32))


def test_style_encoder_sphere_and_padding_invariance():
    enc = StyleEncoder(n_motion=53, d_model=32, layers=1, heads=2, style_dim=16, dropout=0.0).eval()
    m = torch.randn(2, 20, 53)
    z = enc(m)
    assert torch.allclose(z.norm(dim=-1), torch.full((2,), 4.0), atol=1e-5)
    padded = torch.cat([m, torch.zeros(2, 7, 53)], 1)
    mask = torch.cat([torch.ones(2, 20, dtype=torch.bool), torch.zeros(2, 7, dtype=torch.bool)], 1)
    torch.testing.assert_close(enc(padded, mask), z, atol=1e-5, rtol=1e-4)


def test_decoder_windows_cover_any_length():
    dec = TalkingDecoder(audio_dim=8, n_motion=53, d_model=32, layers=1, heads=2, ff=64, style_dim=16, dropout=0.0,
                         window=16, overlap=4, prosody_dim=0).eval()
    z0 = torch.randn(2, 16)
    same = dec.generate(torch.randn(10, 8), z0)
    assert torch.allclose(same[0], same[1])  # zero-initialised modulation: the identity at the start of training
    wake_modulation(dec)
    a = torch.randn(10, 8)
    z = torch.randn(3, 16)
    short = dec.generate(a, z)
    torch.testing.assert_close(short, dec(a[None].repeat(3, 1, 1), z), atol=1e-5, rtol=1e-4)
    long = dec.generate(torch.randn(57, 8), z)
    assert long.shape == (3, 57, 53) and torch.isfinite(long).all()
    # the style changes the output: z steers every block
    assert not torch.allclose(long[0], long[1])


def test_prior_losses_and_sampling():
    p = DiffusionPrior(text_dim=12, style_dim=16, d_model=32, layers=1, heads=2, n_tokens=2, timesteps=20, cond_drop=0.2,
                       dropout=0.0, snr_gamma=5.0)
    losses = p.losses(torch.randn(8, 16), torch.randn(8, 12), generator=torch.Generator().manual_seed(0), contrastive_weight=0.1,
                      mapper_weight=1.0)
    assert set(losses) == {"loss", "diffusion", "contrastive", "mapper"} and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert p.null_text.grad is not None  # the null condition is learned (classifier-free guidance)
    text = torch.randn(2, 12)
    a = p.sample(text, 4, steps=5, guidance_scale=2.0, sampler="ddim", generator=torch.Generator().manual_seed(1))
    b = p.sample(text, 4, steps=5, guidance_scale=2.0, sampler="ddim", generator=torch.Generator().manual_seed(1))
    c = p.sample(text, 4, steps=5, guidance_scale=2.0, sampler="ddim", generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 4, 16) and torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a.norm(dim=-1), torch.full((2, 4), 4.0), atol=1e-4)
    assert torch.cdist(a[0], a[0]).sum() > 0  # samples differ from one another
    assert torch.equal(p.map(text), p.map(text))


def test_synthesize_samples_edits_and_errors(synth, caplog):
    a = speech(1.5)
    seqs = synth.synthesize(a, "A happy person speaks with fairly lifted cheek.", num_samples=3, seed=4)
    assert len(seqs) == 3 and all(s.num_frames == 38 and s.n_exp == 50 and s.fps == 25 for s in seqs)
    assert not np.allclose(seqs[0].expression, seqs[1].expression)
    again = synth.synthesize(a, "A happy person speaks with fairly lifted cheek.", num_samples=3, seed=4)
    np.testing.assert_allclose(again[2].expression, seqs[2].expression, atol=1e-6)
    other = synth.synthesize(a, "A furious person speaks with brow strongly lowered.", seed=4)[0]
    assert not np.allclose(other.expression, seqs[0].expression)  # the text is the style input
    with pytest.raises(InstructionError, match="empty"):
        synth.synthesize(a, "   ")
    with caplog.at_level(logging.WARNING):
        long = synth.synthesize(a, "word " * 1000, seed=1)[0]
    assert long.meta["instruction"].count("word") <= 103 and "truncated" in caplog.text
    with pytest.raises(AudioError):
        synth.synthesize(Audio(np.full(300, 0.1, np.float32)), "A calm person speaks.")


def test_save_load_roundtrip_and_mismatch(synth, tmp_path):
    d = synth.save(tmp_path / "ck")
    back = Synthesizer.load(d, text_encoder=synth.text_encoder, audio_encoder=synth.audio_encoder)
    a = speech(1.0, 3)
    x = synth.synthesize(a, "A sad person speaks.", seed=0)[0]
    y = back.synthesize(a, "A sad person speaks.", seed=0)[0]
    np.testing.assert_allclose(x.expression, y.expression, atol=1e-6)
    cfg = OmegaConf.load(d / "stage2.yaml")
    cfg.stage2.decoder.d_model = 64
    with pytest.raises(CheckpointError, match="component decoder does not match"):
        Synthesizer.load(d, text_encoder=synth.text_encoder, audio_encoder=synth.audio_encoder, cfg=cfg)
    (d / "prior.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing component prior"):
        Synthesizer.load(d, text_encoder=synth.text_encoder, audio_encoder=synth.audio_encoder)


@pytest.mark.slow
def test_training_runs_checkpoints_and_resumes(tmp_path):
    import json

    from avitalk.data.synthtalk import generate
    from avitalk.stage2_synthesis.train import train_stage2

    generate(tmp_path / "d", 12, seed=5, workers=1, progress=False)
    cfg = tiny_stage2_cfg()
    given = OmegaConf.to_yaml(cfg)
    r = train_stage2(cfg, tmp_path / "d", tmp_path / "ck", progress=False)
    assert OmegaConf.to_yaml(cfg) == given  # training works on its own checked copy
    saved = OmegaConf.load(tmp_path / "ck" / "stage2.yaml")  # the resolved config, every default written out
    assert saved.audio_dim == 32 and saved.stage2.sampling.sampler == "ddim" and "gap_weight" in saved.stage2.train.lipsync
    for f in ("style_encoder", "decoder", "prior"):
        assert (tmp_path / "ck" / f"{f}.safetensors").is_file()
    assert (tmp_path / "ck" / "loss_curves.png").is_file() and any((tmp_path / "ck" / "logs").iterdir())
    hist = json.loads((tmp_path / "ck" / "history.json").read_text())
    assert hist["lipsync"][-1]["step"] == 3 and hist["prior"][-1]["step"] == 3
    # resume: more steps continue from step 4, not from 0
    cfg.stage2.train.lipsync.steps = 6
    cfg.stage2.train.prior.steps = 6
    train_stage2(cfg, tmp_path / "d", tmp_path / "ck", resume=True, progress=False)
    hist = json.loads((tmp_path / "ck" / "history.json").read_text())
    steps = [h["step"] for h in hist["lipsync"]]
    assert steps == sorted(steps) and steps[-1] == 5 and steps.count(0) == 1
    s = Synthesizer.load(tmp_path / "ck")
    assert len(s.synthesize(speech(1.0), "A calm person speaks.")) == 1


@pytest.mark.parametrize("spec, cfg", [
    ("random-bert", {"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48}),
    ("random-clip", {"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48}),
])
def test_text_encoders_embed_and_cache(spec, cfg):
    from avitalk.encoders.text import TextEncoder

    te = TextEncoder(spec, config=cfg, device="cpu")
    e = te.encode(["A happy person speaks.", "A sad person speaks.", "A happy person speaks."])
    assert e.shape == (3, 24) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.allclose(e[0], e[2]) and not np.allclose(e[0], e[1])
    with pytest.raises(CheckpointError, match="unknown text encoder"):
        TextEncoder("word2vec")


def test_row_weights_give_the_motion_corpora_their_share():
    from types import SimpleNamespace

    from avitalk.stage2_synthesis.train import row_weights

    bank = SimpleNamespace(corpus=[0] * 6 + [1] * 2)
    assert row_weights(bank, None) is None  # uniform over clips
    p = row_weights(bank, 0.5)
    assert p[:6].sum() == pytest.approx(0.5) and p[6:].sum() == pytest.approx(0.5) and p[0] == pytest.approx(0.5 / 6)
    assert row_weights(SimpleNamespace(corpus=[0] * 4), 0.5) is None  # one corpus
    from avitalk.config import ConfigError

    with pytest.raises(ConfigError, match="motion_data_share"):
        row_weights(bank, 1.5)


def test_lipsync_losses_can_read_the_mouth_alone():
    """lips_only rows (stage2.train.lipsync.motion_data_loss: lips): a brow the data raised costs nothing there, the
    same brow costs in a whole-face row, and a jaw that differs costs in both."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from avitalk.flame import FlameModel
    from avitalk.flame.standin import AU_NAMES, standin_arrays
    from avitalk.stage2_synthesis.train import lipsync_losses

    model = FlameModel.standin()
    lips = model.region("lips")
    subset = model.subset(np.concatenate([lips, model.region("forehead")]))
    w = OmegaConf.create({"vertex_frame_fraction": 1.0, "lip_weight": 3.0, "coef_weight": 1.0, "vertex_weight": 1.0,
                          "velocity_weight": 0.5, "gap_weight": 0.0})
    dec = SimpleNamespace(motion_std=torch.ones(53))
    pred, mask = torch.zeros(2, 8, 53), torch.ones(2, 8, dtype=torch.bool)
    brow = torch.zeros(2, 8, 53)
    brow[..., :50] = torch.as_tensor(standin_arrays()[0]["au_to_expression"][AU_NAMES.index("AU01_inner_brow_raise")])
    jaw = torch.zeros(2, 8, 53)
    jaw[..., 50] = 0.15

    def loss(target, lips_only):
        out = lipsync_losses(pred, target, mask, dec, subset, torch.arange(len(lips)), w, lips_only=lips_only)
        return float(out["loss"])

    mouth = torch.tensor([True, True])
    assert loss(brow, mouth) == pytest.approx(0.0, abs=1e-6)
    assert loss(brow, None) > 0.1 and loss(brow, torch.tensor([False, True])) > 0.05
    assert loss(jaw, mouth) > 0.01 and loss(jaw, None) > 0.01


@pytest.mark.slow
def test_training_reads_more_motion_for_lip_sync_only(tmp_path):
    """--motion-data: its clips join the lip-sync batches (and the motion statistics); the prior's clips stay --data's."""
    import json

    from avitalk.data.synthtalk import generate
    from avitalk.stage2_synthesis.clips import ClipBank
    from avitalk.stage2_synthesis.train import train_stage2

    generate(tmp_path / "d", 8, seed=5, workers=1, progress=False)
    generate(tmp_path / "m", 6, seed=9, workers=1, progress=False)
    man = tmp_path / "m" / "manifest.jsonl"  # its own clip names
    man.write_text("".join(json.dumps({**json.loads(line), "id": "m" + json.loads(line)["id"]}) + "\n"
                           for line in man.read_text().splitlines()))
    cfg = tiny_stage2_cfg()
    cfg.stage2.train.lipsync.motion_data_share = 0.5
    cfg.stage2.train.lipsync.motion_data_loss = "face"
    from avitalk.config import ConfigError

    with pytest.raises(ConfigError, match="motion_data_loss: 'face' is not one of all, lips"):
        train_stage2(cfg, tmp_path / "d", tmp_path / "ck", progress=False, motion_data=(tmp_path / "m",))
    cfg.stage2.train.lipsync.motion_data_loss = "lips"  # the motion corpus's rows read the mouth alone
    r = train_stage2(cfg, tmp_path / "d", tmp_path / "ck", progress=False, motion_data=(tmp_path / "m",))
    info = json.loads((tmp_path / "ck" / "train_info.json").read_text())
    assert info["motion_data"] == [str(tmp_path / "m")]
    ids = {i for h in r["history"]["lipsync"] for rank in h["clips_by_rank"] for i in rank}
    from avitalk.encoders.cache import cache_dataset_features

    enc = r["synthesizer"].audio_encoder
    a = ClipBank(tmp_path / "d", "train", cache_dataset_features(tmp_path / "d", enc, progress=False))
    b = ClipBank(tmp_path / "m", "train", cache_dataset_features(tmp_path / "m", enc, progress=False))
    both = ClipBank.concat([a, b])
    assert both.corpus == [0] * len(a) + [1] * len(b) and len(both) == len(a) + len(b)
    assert all(p[0] >= len(a) for p in both.partners[len(a):])  # partners stay within their corpus
    first = ClipBank.concat([a, b], partners="first")  # or: styles of the main corpus's clips of the same emotion
    for i in range(len(a), len(first)):
        same = [j for j in range(len(a)) if a.keys[j][1] == first.keys[i][1]]
        assert first.partners[i] == (same or both.partners[i])
    assert first.partners[: len(a)] == both.partners[: len(a)]
    with pytest.raises(ValueError, match="partners"):
        ClipBank.concat([a, b], partners="nearest")
    stats = np.concatenate(both.motion)
    assert np.allclose(r["synthesizer"].decoder.motion_mean.numpy(), stats.mean(0), atol=1e-4)
    assert not set(a.ids) & set(b.ids) and ids & set(b.ids) and ids & set(a.ids)  # both corpora in the batches


def test_pause_copies_put_the_clip_between_silences_with_the_face_at_rest(tmp_path):
    """stage2.train.pause_copies: each training clip again between 0.5-3 s of silence (encoded once, cached), its
    motion the clip's first frame held before it and settling back to that frame after it; pause_p of a batch's rows
    read one."""
    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import cache_dataset_features, cache_paused_features, pause_plan, paused_samples
    from avitalk.stage2_synthesis.clips import ClipBank, paused_motion
    from avitalk.stage2_synthesis.train import lipsync_batch

    m = np.random.default_rng(0).normal(size=(10, 53)).astype(np.float32)
    p = paused_motion(m, 3, 8, settle=5)
    assert p.shape == (21, 53) and np.allclose(p[:4], m[0]) and np.allclose(p[3:13], m)
    assert np.allclose(p[-4:], m[0]) and not np.allclose(p[13], m[0]) and not np.allclose(p[13], m[-1])
    assert paused_samples(np.ones(100, np.float32), 2, 1).tolist() == [0.0] * 1280 + [1.0] * 100 + [0.0] * 640

    lead, trail, _ = pause_plan(0, "clip", 0)
    assert pause_plan(0, "clip", 0) == (lead, trail, _) and 12 <= lead <= 75 and 12 <= trail <= 75
    assert len({pause_plan(0, f"c{i}", 0)[2] for i in range(20)}) == 2  # some copies clean, some through the chain

    generate(tmp_path / "d", 4, seed=5, workers=1, progress=False)
    enc = Synthesizer.build(tiny_stage2_cfg()).audio_encoder
    cache = cache_dataset_features(tmp_path / "d", enc, progress=False)
    pcache = cache_paused_features(tmp_path / "d", enc, 1, seed=0, progress=False)
    bank = ClipBank(tmp_path / "d", "train", cache, paused=pcache, pauses=1, seed=0)
    for i, cid in enumerate(bank.ids):
        (f, mot), = bank.paused[i]
        lead, trail, _ = pause_plan(0, cid, 0)
        assert len(mot) == len(bank.motion[i]) + lead + trail == len(f) and f.shape[1] == enc.dim
        assert np.allclose(mot[lead : lead + len(bank.motion[i])], bank.motion[i])
    rng = np.random.default_rng(0)
    b = lipsync_batch(bank, np.arange(len(bank)), 400, rng, 0.0, pause_p=1.0)
    lengths = b["mask"].sum(1).tolist()
    assert lengths == [len(p[0][1]) for p in bank.paused]  # every row read its pause copy
    b = lipsync_batch(bank, np.arange(len(bank)), 400, rng, 0.0, pause_p=0.0)
    assert b["mask"].sum(1).tolist() == [len(x) for x in bank.motion]


def test_speech_only_rows_leave_a_tracked_face_s_silences_out_of_the_loss(tmp_path):
    """stage2.train.lipsync.motion_data_frames: speech: the rows of a motion corpus count only the frames within a
    margin of one of the clip's words (its pause copies' added silences too); the decoder still reads every frame."""
    import json

    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import cache_dataset_features, cache_paused_features, pause_plan
    from avitalk.stage2_synthesis.clips import ClipBank, speech_frames
    from avitalk.stage2_synthesis.train import lipsync_batch

    sp = speech_frames([["bin", 0.4, 0.6], ["blue", 0.6, 0.8]], 30, margin=0.1)
    assert sp.tolist() == [False] * 8 + [True] * 15 + [False] * 7  # 0.3-0.9 s at 25 fps
    assert speech_frames([], 30) is None and speech_frames(None, 30) is None

    generate(tmp_path / "d", 4, seed=5, workers=1, progress=False)
    man = tmp_path / "d" / "manifest.jsonl"  # word times as a GRID import writes them: one word 0.4-0.8 s
    man.write_text("".join(json.dumps({**json.loads(line), "words": [["bin", 0.4, 0.8]]}) + "\n"
                           for line in man.read_text().splitlines()))
    enc = Synthesizer.build(tiny_stage2_cfg()).audio_encoder
    cache = cache_dataset_features(tmp_path / "d", enc, progress=False)
    pcache = cache_paused_features(tmp_path / "d", enc, 1, seed=0, progress=False)
    bank = ClipBank(tmp_path / "d", "train", cache, paused=pcache, pauses=1, seed=0)
    words = speech_frames([["bin", 0.4, 0.8]], len(bank.motion[0]))
    assert bank.speech[0].tolist() == words.tolist()
    lead, trail, _ = pause_plan(0, bank.ids[0], 0)
    assert bank.paused_speech[0][0].tolist() == [False] * lead + words.tolist() + [False] * trail
    rows = np.arange(len(bank))
    only = np.array([True, False] * (len(bank) // 2))
    for pause_p in (0.0, 1.0):
        b = lipsync_batch(bank, rows, 400, np.random.default_rng(0), 0.0, pause_p, speech_only=only)
        lengths = [len(bank.paused[i][0][1]) if pause_p else len(bank.motion[i]) for i in rows]
        assert b["mask"].sum(1).tolist() == lengths
        for r in rows:
            n = int(b["mask"][r].sum())
            want = (bank.paused_speech[r][0] if pause_p else bank.speech[r]) if only[r] else np.ones(n, bool)
            assert b["loss_mask"][r, :n].tolist() == want.tolist() and not b["loss_mask"][r, n:].any()


@pytest.mark.slow
def test_live_decoder_learns_from_the_windows_a_stream_encodes(tmp_path):
    """stage2.train.stream: windows of the pause copies' audio encoded as a live stream encodes them (cached), their
    motion lined up to the frame; the live decoder is a copy of the lip-sync decoder fine-tuned on them, saved as
    decoder_stream.safetensors, loaded with the checkpoint and used by MotionStream; phase 'stream' alone keeps the
    prior, a later lip-sync run drops a live decoder that no longer fits."""
    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import cache_dataset_features, cache_stream_windows, pause_plan, stream_window_plan
    from avitalk.encoders.streaming import stream_windows
    from avitalk.stage2_synthesis.clips import ClipBank, paused_motion
    from avitalk.stage2_synthesis.stream import MotionStream
    from avitalk.stage2_synthesis.train import stream_batch, train_stage2

    ends = {stream_window_plan(0, "clip", k, 40)[3] for k in range(30)}
    assert min(ends) >= 1 and len(ends) > 10
    plans = [(stream_window_plan(0, f"c{i}", 1, 40), pause_plan(0, f"c{i}", 1)) for i in range(20)]
    assert all(w[:3] == p or w[:3] == (0, 0, p[2]) for w, p in plans)  # the pause copy's audio, or the bare clip's
    assert {w[0] == 0 for w, _ in plans} == {True, False}

    generate(tmp_path / "d", 8, seed=5, workers=1, progress=False)
    cfg = tiny_stage2_cfg()
    enc = Synthesizer.build(cfg).audio_encoder
    cache = cache_dataset_features(tmp_path / "d", enc, progress=False)
    wcache = cache_stream_windows(tmp_path / "d", enc, 2, 1.0, seed=0, progress=False)
    bank = ClipBank(tmp_path / "d", "train", cache, seed=0, streamed=wcache, stream_copies=2)
    for i, cid in enumerate(bank.ids):
        for k, (f, mot) in enumerate(bank.windows[i]):
            lead, trail, _, end = stream_window_plan(0, cid, k, len(bank.motion[i]))
            assert len(f) == len(mot) == min(end, 25) and f.shape[1] == enc.dim
            assert np.allclose(mot, paused_motion(bank.motion[i], lead, trail)[end - len(f) : end])
    # a clean window is what a stream hears: its features equal stream_windows' on the same audio
    b = stream_batch(bank, np.arange(len(bank)), 16, np.random.default_rng(0))
    assert b["feats"].shape[1] == max(len(w[0][0]) for w in bank.windows) and b["partner"].shape[1] <= 16
    x = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    (first, f), = stream_windows(enc, [x], [20], 0.4)
    assert first == 10 and f.shape == (10, enc.dim)

    from avitalk.config import ConfigError

    with pytest.raises(ConfigError, match="stream.steps is 0"):  # a config without a live decoder says so
        train_stage2(cfg, tmp_path / "d", tmp_path / "none", phase="stream", progress=False)
    cfg = OmegaConf.merge(cfg, {"stage2": {"train": {"stream": {"steps": 3, "batch_size": 2, "windows": 2,
                                                                "context_s": 1.0}}}})
    train_stage2(cfg, tmp_path / "d", tmp_path / "ck", progress=False)
    assert (tmp_path / "ck" / "decoder_stream.safetensors").is_file()
    s = Synthesizer.load(tmp_path / "ck")
    assert s.stream_decoder is not None and s.live_decoder is s.stream_decoder
    assert any(not torch.equal(p, q) for p, q in zip(s.decoder.parameters(), s.stream_decoder.parameters()))
    assert MotionStream(s, "A calm person speaks.", 2).decoder is s.stream_decoder
    prior = (tmp_path / "ck" / "prior.safetensors").read_bytes()
    cfg.stage2.train.stream.steps = 5
    train_stage2(cfg, tmp_path / "d", tmp_path / "ck", phase="stream", resume=True, progress=False)
    assert (tmp_path / "ck" / "prior.safetensors").read_bytes() == prior  # the trained prior kept
    train_stage2(cfg, tmp_path / "d", tmp_path / "ck", phase="lipsync", progress=False)
    assert not (tmp_path / "ck" / "decoder_stream.safetensors").exists()
    s = Synthesizer.load(tmp_path / "ck")
    assert s.stream_decoder is None and s.live_decoder is s.decoder


def test_event_loss_hinges_on_the_lip_gap_at_aligned_sounds():
    """A bilabial counts the smallest gap within 2 frames over 0.3 mm, an open vowel the largest under 3.5 mm; frames
    past a row's length are not read; no events, no loss. In a pause, a gap over 1 mm counts."""
    import torch

    from avitalk.stage2_synthesis.train import event_loss, rest_loss

    gap = torch.full((2, 10), 2.0)
    gap[0, 3] = 0.1  # shut within 2 frames of the bilabial at frame 5
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 8:] = False
    assert event_loss(gap, [[("bilabial", 5.0)], []], mask).item() == 0.0
    assert abs(event_loss(gap, [[("bilabial", 8.0)], []], mask).item() - 1.7**2) < 1e-5  # frames 6-10: 2 mm
    assert abs(event_loss(gap, [[], [("open", 4.0)]], mask).item() - 1.5**2) < 1e-5
    gap[1, 9] = 9.0  # past row 1's length: not read
    assert abs(event_loss(gap, [[], [("open", 8.0)]], mask).item() - 1.5**2) < 1e-5
    assert event_loss(gap, [[], []], mask).item() == 0.0
    quiet = torch.zeros(2, 10, dtype=torch.bool)
    assert rest_loss(gap, quiet).item() == 0.0  # no pause, no loss
    quiet[0, 3:5] = True  # gaps 0.1 and 2.0 mm in a pause: (0 + 1) / 2
    assert abs(rest_loss(gap, quiet).item() - 0.5) < 1e-6


@pytest.mark.slow
def test_event_rows_teach_the_lips_to_shut_at_aligned_bilabials(tmp_path):
    """--event-data: speech without motion joins lip-sync pretraining through its aligned sounds (read from
    aligned_events.json, as eval/bilabial.py's aligner writes it); every fifth speaker is held out; the decoder trained
    with the rows shuts the lips at the bilabials of the clips it trained on, which the same training without them
    does not."""
    import json

    import torch

    from avitalk.data.manifest import read_manifest
    from avitalk.data.synthtalk import generate
    from avitalk.encoders.cache import cache_dataset_features
    from avitalk.flame import FlameModel
    from avitalk.stage2_synthesis.clips import ClipBank, EventBank
    from avitalk.stage2_synthesis.train import train_stage2

    generate(tmp_path / "d", 8, seed=5, workers=1, progress=False)
    generate(tmp_path / "r", 10, seed=7, workers=1, progress=False)
    man = tmp_path / "r" / "manifest.jsonl"  # ten speakers
    man.write_text("".join(json.dumps({**json.loads(line), "speaker": f"s{k}"}) + "\n"
                           for k, line in enumerate(man.read_text().splitlines())))
    clips = read_manifest(tmp_path / "r")
    events = {c.id: {"speaker": c.speaker, "text": "", "events": [["bilabial", t] for t in (0.4, 1.0, 1.6)]}
              for k, c in enumerate(clips)}
    (tmp_path / "r" / "aligned_events.json").write_text(json.dumps(events))
    cfg = tiny_stage2_cfg()
    lc = cfg.stage2.train.lipsync
    lc.steps, lc.gap_weight, lc.event_rows, lc.event_weight, lc.lr = 80, 1.0, 4, 5.0, 3e-3
    r = train_stage2(cfg, tmp_path / "d", tmp_path / "ev", phase="lipsync", progress=False,
                     event_data=(tmp_path / "r",))
    info = json.loads((tmp_path / "ev" / "train_info.json").read_text())
    assert info["event_held_out_speakers"] == ["s0", "s5"] and info["event_clips"] == 8
    assert all("events_mm2" in h for h in r["history"]["lipsync"])
    ids = {i for h in r["history"]["lipsync"] for rank in h["clips_by_rank"] for i in rank}
    assert ids & set(events) - {clips[0].id, clips[5].id} and not ids & {clips[0].id, clips[5].id}
    lc.event_rows = 0
    plain = train_stage2(cfg, tmp_path / "d", tmp_path / "plain", phase="lipsync", progress=False)

    head = FlameModel.from_spec("standin")
    lips = head.region("lips")
    up, lo = head.lip_midline()
    sub = head.subset(lips)
    gi = (torch.as_tensor(np.flatnonzero(np.isin(lips, up))), torch.as_tensor(np.flatnonzero(np.isin(lips, lo))))
    syn = r["synthesizer"]
    bank = EventBank(tmp_path / "r", cache_dataset_features(tmp_path / "r", syn.audio_encoder, progress=False))
    style = torch.as_tensor(ClipBank(tmp_path / "d", "train", cache_dataset_features(
        tmp_path / "d", syn.audio_encoder, progress=False)).motion[0])[None]

    def shut(s) -> float:  # the smallest lip gap within 2 frames of each bilabial, mean over the clips (mm)
        out = []
        with torch.no_grad():
            zs = s.style_encoder(style, torch.ones(style.shape[:2], dtype=torch.bool))
            for f, ev in zip(bank.feats, bank.events):
                p = s.decoder(torch.as_tensor(f, dtype=torch.float32)[None], zs)[0]
                g = FlameModel.lip_gap(sub(p[:, :-3], p[:, -3:]), *gi).numpy()
                out += [g[max(0, int(t) - 2) : int(t) + 3].min() for _, t in ev]
        return float(np.mean(out))

    with_rows, without = shut(syn), shut(plain["synthesizer"])
    assert with_rows < 0.5 * without, (with_rows, without)
    lc.event_rows = 4  # the live decoder learns the same rows beside its stream windows
    cfg.stage2.train.stream = {"steps": 3, "batch_size": 4, "windows": 2}
    r = train_stage2(cfg, tmp_path / "d", tmp_path / "ev", phase="stream", resume=True, progress=False,
                     event_data=(tmp_path / "r",))
    assert r["history"]["stream"] and all("events_mm2" in h and "rest_mm2" in h for h in r["history"]["stream"])
