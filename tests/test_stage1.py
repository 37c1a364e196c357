import json
import shutil

import pytest
import torch

from avitalk.errors import CheckpointError

from avitalk.stage1_instruct.instructor import to_instruction
from avitalk.vocab import first_sentence
from avitalk.text_metrics import rouge_l
from avitalk.stage1_instruct.instructor import Instructor
from avitalk.stage1_instruct.lm import load_stage1
from avitalk.stage1_instruct.train import train_stage1

from .conftest import tiny_stage1_cfg


def test_rouge_l_matches_the_papers_examples():
    ref = "police killed the gunman"
    assert rouge_l("police kill the gunman", ref) == pytest.approx(0.75)
    assert rouge_l("the gunman kill police", ref) == pytest.approx(0.5)
    assert rouge_l("", ref) == 0.0 and rouge_l(ref, ref) == 1.0


def test_text_helpers():
    assert first_sentence("A sad man speaks.  A happy one") == "A sad man speaks."
    ins = to_instruction("A furious man speaks with brow strongly lowered.")
    assert (ins.emotion, ins.intensity) == ("angry", "strong") and ins.actions == (("AU04_brow_lower", "strongly"),)
    free = to_instruction("Someone mumbles quietly")
    assert free.emotion is None and free.text == "Someone mumbles quietly"


@pytest.mark.slow
def test_stage1_trains_saves_reloads_and_generates(tmp_path):
    from avitalk.data.synthtalk import generate

    generate(tmp_path / "d", 12, seed=1, workers=1, progress=False)
    r = train_stage1(tiny_stage1_cfg(), tmp_path / "d", tmp_path / "ck", progress=False)
    ck = tmp_path / "ck"
    for need in ("tokenizer", "lm", "adapter", "qformer.safetensors", "stage1.yaml", "history.json"):
        assert (ck / need).exists(), need
    lean, hf = Instructor.load(ck), Instructor.load(ck, lean=False)  # plain-torch LM, and transformers + peft
    assert lean.lean and not hf.lean
    f = torch.randn(2, 100, 32)
    m = torch.ones(2, 100, dtype=torch.bool)
    greedy = lean.generate(f, m, max_new_tokens=12)
    assert len(greedy) == 2 and all(isinstance(t[0], str) for t in greedy)
    assert lean.generate(f, m, max_new_tokens=12) == greedy  # greedy is deterministic
    assert hf.generate(f, m, max_new_tokens=12) == greedy  # both runtimes write the same text
    sampled = lean.generate(f[:1], m[:1], num_samples=3, do_sample=True, temperature=1.5, max_new_tokens=8, seed=0)
    assert len(sampled[0]) == 3
    beams = hf.generate(f[:1], m[:1], num_beams=2, max_new_tokens=8)
    assert len(beams[0]) == 1
    with pytest.raises(ValueError, match="beam search"):
        lean.generate(f[:1], m[:1], num_beams=2)
    # reloaded weights give the same text as the trained model
    assert Instructor.from_model(r["model"].eval(), None).generate(f, m, max_new_tokens=12) == greedy
    # a broken adapter is a clear error
    (ck / "adapter" / "adapter_config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="adapter"):
        load_stage1(ck)
    shutil.rmtree(ck / "lm")
    with pytest.raises(CheckpointError, match="missing stage-1 component lm"):
        load_stage1(ck)


def test_stage1_leaves_the_emotion_reader_to_a_caller_that_installs_its_own(tmp_path):
    """``with_reader=False`` (the default checkpoint's build, which calibrates its reader on leave-speakers-out folds
    afterwards): stage 1 trains without fitting a reader of its own, whatever ``stage1.reader`` says."""
    from avitalk.data.synthtalk import generate

    generate(tmp_path / "d", 12, seed=1, workers=1, progress=False)
    cfg = tiny_stage1_cfg()
    cfg.stage1.reader = True
    cfg.stage1.tiny_lm.steps = 2
    cfg.stage1.train.steps = 2
    r = train_stage1(cfg, tmp_path / "d", tmp_path / "ck", progress=False, with_reader=False)
    assert (tmp_path / "ck" / "qformer.safetensors").is_file()
    assert not (tmp_path / "ck" / "reader.safetensors").exists() and "reader_s" not in r["timings"]


@pytest.mark.slow
def test_stage1_resumes_from_its_last_state(tmp_path, monkeypatch):
    from avitalk.data.synthtalk import generate

    generate(tmp_path / "d", 10, seed=3, workers=1, progress=False)
    cfg = tiny_stage1_cfg()
    cfg.stage1.prosody = True
    cfg.stage1.train.update(steps=4, checkpoint_every=2, qformer_warmup_steps=2, aux_weight=1.0, keyword_weight=3.0)
    full = train_stage1(cfg.copy(), tmp_path / "d", tmp_path / "ck", progress=False)
    assert [h["step"] for h in full["history"]["adapter"]] == [0, 3]
    assert (tmp_path / "ck" / "loss_curves.png").is_file()
    f = torch.randn(1, 60, 36)
    before = Instructor.from_model(full["model"].eval(), None).generate(f, None, max_new_tokens=10)

    # the same run, stopped right after the adapter phase saved its state at step 2
    monkeypatch.setenv("AVITALK_TRAIN_STOP_AT", "adapter:2")
    with pytest.raises(SystemExit):
        train_stage1(cfg.copy(), tmp_path / "d", tmp_path / "ck2", progress=False)
    monkeypatch.delenv("AVITALK_TRAIN_STOP_AT")
    assert sorted(p.name for p in (tmp_path / "ck2" / "train_state").iterdir()) == [
        "adapter.pt", "adapter.safetensors", "qformer_warmup.pt", "qformer_warmup.safetensors"]
    warm = json.loads((tmp_path / "ck2" / "history.json").read_text())["qformer_warmup"]
    resumed = train_stage1(cfg.copy(), tmp_path / "d", tmp_path / "ck2", resume=True, progress=False)
    assert resumed["history"]["qformer_warmup"] == warm  # the warm-up was not repeated
    assert [h["step"] for h in resumed["history"]["adapter"]] == [0, 3]
    assert Instructor.from_model(resumed["model"].eval(), None).generate(f, None, max_new_tokens=10) == before  # same result as the uninterrupted run


def test_emotion_vote_picks_which_emotion_word_never_whether():
    """EmotionVote: where the LLM's own top token begins an emotion word, the choice is among the emotion-word starts
    (LLM + vote); elsewhere the logits are untouched; the lean runtime takes it as a per-step logits transform."""
    from avitalk.lean.llama import _next_token
    from avitalk.stage1_instruct.vote import EmotionVote, TransformersVote

    bias = torch.tensor([[0.0, 0.0, -5.0, 0.0, 0.0], [0.0, 0.0, -5.0, 0.0, 0.0]])
    vote = EmotionVote(bias, [2, 3])  # tokens 2 and 3 begin emotion words; the vote is against token 2's emotion
    logits = torch.tensor([[0.0, 1.0, 3.0, -1.0, 2.5],    # the LLM would write emotion word 2
                           [0.0, 4.0, 3.0, -1.0, 2.5]])   # the LLM would write token 1 (not an emotion word)
    out = vote(logits)
    assert out[0].argmax() == 3 and torch.isinf(out[0, [0, 1, 4]]).all()  # emotion word 3, never token 4 (2.5)
    assert torch.equal(out[1], logits[1])
    twice = vote.repeat_rows(2)
    assert twice.bias.shape == (4, 5) and torch.equal(twice(logits.repeat_interleave(2, 0))[::2], out)
    assert torch.equal(TransformersVote(vote)(None, logits), out)  # transformers' logits processor, the same rule
    tok, done = _next_token(logits, vote, torch.zeros(2, dtype=torch.bool), False, 1.0, 1.0, 0, None)
    assert tok.tolist() == [3, 1] and not done.any()


def test_emotion_guidance_weighs_the_head_into_the_emotion_word():
    """``emotion_guidance`` adds the Q-Former head's emotion log-probabilities to the tokens that begin each emotion's
    words: 0 leaves the LLM's text alone, a large weight writes the head's emotion, and the transformers + peft path
    writes what the lean runtime writes."""
    import numpy as np

    from avitalk.data.synthtalk import say
    from avitalk.top.pipeline import DEFAULT_CHECKPOINT, AVITalkingPipeline
    from avitalk.types import Audio
    from avitalk.vocab import EMOTIONS

    pipe = AVITalkingPipeline.from_pretrained()
    ins = pipe.instructor
    rows = [ins.hearing.rows(Audio(say(t, e, 3)["audio"]), None, pipe.audio_encoder)
            for t, e in (("I can't believe you did that again.", "angry"), ("The weather is fine today.", "sad"))]
    T = max(len(r) for r in rows)
    f = torch.zeros(2, T, rows[0].shape[1])
    m = torch.zeros(2, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        f[i, : len(r)], m[i, : len(r)] = torch.from_numpy(np.asarray(r)), True
    assert ins._guidance() == 8.0  # the embedded default's config (chosen on SynthTalk validation)
    assert ins.generate(f, m) == ins.generate(f, m, emotion_guidance=8.0)
    _, _, pooled = ins.prefix(f, m)
    V = ins.lm.embeddings().num_embeddings
    bias = ins.emotion.bias(pooled, 1.0, V)
    ids, emo = ins.emotion.tokens()
    assert bias.shape == (2, V) and len(ids) > 30
    assert torch.count_nonzero(bias[:, [i for i in range(bias.shape[1]) if i not in set(ids)]]) == 0
    assert not any(ins.lm.tokenizer.decode([i]).strip() in ("person", "brow", "lip", "slightly", "with") for i in ids)
    head = [EMOTIONS[int(j)] for j in ins._heads["aux.weight"].float().matmul(pooled.T).T.add(
        ins._heads["aux.bias"].float())[:, : len(EMOTIONS)].argmax(-1)]
    forced = ins.generate(f, m, emotion_guidance=100.0)
    assert [to_instruction(t[0]).emotion for t in forced] == head
    # features where the LLM and the head disagree (seeded noise): the weight decides
    r = torch.randn(1, 150, f.shape[2], generator=torch.Generator().manual_seed(3))
    rm = torch.ones(1, 150, dtype=torch.bool)
    lm_says = to_instruction(ins.generate(r, rm, emotion_guidance=0)[0][0]).emotion
    head_says = EMOTIONS[emo[int(ins.emotion.bias(ins.prefix(r, rm)[2], 1.0, V)[0, ids].argmax())]]
    assert lm_says != head_says
    assert to_instruction(ins.generate(r, rm, emotion_guidance=100.0)[0][0]).emotion == head_says
    hf = Instructor.load(DEFAULT_CHECKPOINT, pipe.cfg, lean=False)
    assert hf.generate(f, m, emotion_guidance=2.0) == ins.generate(f, m, emotion_guidance=2.0)
