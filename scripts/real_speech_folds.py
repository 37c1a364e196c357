"""Stage 1 on real voices, speaker-independently: leave-actors-out folds over a labelled real-speech dataset.

For each fold, stage 1 is trained on the SynthTalk corpus plus the real clips of every actor *not* in the fold, then
writes an instruction (greedy) for every clip of the fold's actors, whose emotion word is scored against the label
(calm counted as neutral). The tiny LM (trained on instruction text only, which depends on the labels, not on any
voice) is trained once and shared by the folds. Writes WORK/folds.json, WORK/confusion.png (all folds pooled) and
prints the table.

    python scripts/real_speech_folds.py --synth build/demo-checkpoint/data --real build/real/ravdess --folds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def concatenated_accuracy(gen, enc, real: Path, clips, n: int, seed: int = 0) -> dict:
    """Emotion accuracy on longer speech: ``n`` clips of one actor and one emotion joined with 0.3 s pauses (about 10 s
    for n = 3), each clip used once; the instruction's emotion word against the shared label."""
    from collections import defaultdict

    from avitalk import audio as audio_io
    from avitalk.types import SAMPLE_RATE, Audio

    groups = defaultdict(list)
    for c in clips:
        groups[(c.speaker, c.emotion)].append(c)
    rng = np.random.default_rng(seed)
    right = total = 0
    pause = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    for (_, emotion), cs in sorted(groups.items()):
        cs = [cs[i] for i in rng.permutation(len(cs))]
        for j in range(0, len(cs) - n + 1, n):
            parts = [audio_io.load(real / c.audio) for c in cs[j : j + n]]
            joined = Audio(np.concatenate([np.concatenate([p.samples, pause]) for p in parts]), parts[0].sample_rate)
            said = gen.instruct(joined, features=enc.encode(joined), encoder=enc)[0].emotion
            right += said == emotion
            total += 1
    return {"n": n, "clips": total, "accuracy": right / max(1, total)}


def head_calibration(done: list[dict], key: str = "head_logits") -> dict:
    """The emotion head's temperature (fitted on all folds' held-out clips: stage1.head_temperature) and, measured
    honestly, the calibration of each fold's held-out clips with a temperature fitted on the *other* folds, pooled;
    empty when a fold has no stored logits (results from before they were kept). ``key="voted_log_probs"``: the same
    for the emotion reader as it voted."""
    from avitalk.eval.real_speech import calibration, fit_temperature

    if len(done) < 2 or any(key not in r for r in done):
        return {}
    zs = [np.asarray(r[key]) for r in done]
    ys = [np.asarray(r["head_labels"]) for r in done]
    cross, ts = [], []
    for k in range(len(done)):
        ts.append(fit_temperature(np.concatenate([z for j, z in enumerate(zs) if j != k]),
                                  np.concatenate([y for j, y in enumerate(ys) if j != k])))
        cross.append(zs[k] / ts[-1])
    z_all, y_all = np.concatenate(zs), np.concatenate(ys)
    after = calibration(np.concatenate(cross), y_all)
    after["temperature"] = ts  # each fold's, fitted on the other folds
    return {"temperature": fit_temperature(z_all, y_all), "before": calibration(z_all, y_all), "after": after}


def pooled_concat(done: list[dict]) -> dict:
    """The folds' joined-clip results pooled (empty when a fold has none)."""
    if not done or not all("concat" in r for r in done):
        return {}
    cs = [r["concat"] for r in done]
    n = sum(c["clips"] for c in cs)
    return {"concat": {"n": cs[0]["n"], "clips": n, "accuracy": sum(c["accuracy"] * c["clips"] for c in cs) / max(1, n),
                       "per_fold": [c["accuracy"] for c in cs]}}


def synth_accuracy(gen, enc, synth: Path, split: str = "val", quiet: bool = True) -> dict:
    """The emotion word of ``gen``'s instruction on one split of a SynthTalk corpus, each clip heard from its audio
    as ``avitalk run`` hears it (even margins, emotion guidance: the generator's settings)."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest

    clips = read_manifest(synth, split)
    audios = [audio_io.load(synth / c.audio) for c in tqdm(clips, desc=f"SynthTalk {split}", disable=quiet)]
    said = [i.emotion for i in gen.instruct_many(audios, encoder=enc)]
    right = [s == c.emotion for s, c in zip(said, clips)]
    return {"split": split, "clips": len(clips), "accuracy": float(np.mean(right)) if clips else 0.0}


def pooled_synth(done: list[dict]) -> dict:
    """The folds' SynthTalk-validation results: per fold and their mean (empty when a fold has none)."""
    if not done or not all("synth_val" in r for r in done):
        return {}
    accs = [r["synth_val"]["accuracy"] for r in done]
    return {"synth_val": {"clips": done[0]["synth_val"]["clips"], "accuracy": float(np.mean(accs)), "per_fold": accs}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"))
    ap.add_argument("--synth", required=True, help="SynthTalk corpus (with motion)")
    ap.add_argument("--real", required=True, help="labelled real speech (e.g. avitalk data ravdess ... without --fits)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--only", type=int, nargs="*", help="run these folds only")
    ap.add_argument("--work", default="build/real-folds")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--rescore", action="store_true",
                    help="no training: read the held-out actors again from the folds' checkpoints with the config's "
                         "inference settings (e.g. stage1.emotion_guidance)")
    ap.add_argument("--concat", type=int, default=0,
                    help="also score longer speech: N clips of the same held-out actor and emotion joined (0.3 s "
                         "pauses between), each clip in at most one join")
    ap.add_argument("--synth-val", action="store_true",
                    help="also read the SynthTalk corpus's validation split with each fold's model (emotion word "
                         "accuracy, heard as the real clips are): one set to choose a recipe on for both domains")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from avitalk.data.dataset import pad_arrays
    from avitalk.data.manifest import read_manifest
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.cache import cache_dataset_features
    from avitalk.io import atomic_write_json
    from avitalk.eval.real_speech import emotion_report, plot_confusion
    from avitalk.stage1_instruct.instructor import to_instruction
    from avitalk.stage1_instruct.features import FeatureBank
    from avitalk.stage1_instruct.instructor import Instructor
    from avitalk.stage1_instruct.lm import load_stage1
    from avitalk.stage1_instruct.reader import READER_FILE
    from avitalk.stage1_instruct.train import fit_stage1_reader, train_stage1

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from avitalk.config import load_config

    cfg = load_config(a.config, a.set)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    real = Path(a.real)
    speakers = sorted({c.speaker for c in read_manifest(real)})
    folds = [speakers[k :: a.folds] for k in range(a.folds)]
    results_path = work / "folds.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    enc = audio_encoder_from_config(cfg.audio_encoder)
    cache = cache_dataset_features(real, enc, progress=not a.quiet)
    for k, held in enumerate(folds):
        if a.only is not None and k not in a.only:
            continue
        out = work / f"fold{k}"
        if a.rescore and not (out / "qformer.safetensors").is_file():
            print(f"fold {k}: no checkpoint in {out} to rescore")
            continue
        if str(k) in results and not a.rescore:
            print(f"fold {k}: done ({results[str(k)]['accuracy']:.1%})")
            continue
        if k > 0 and (work / "fold0" / "lm").is_dir() and not (out / "lm").is_dir():
            out.mkdir(parents=True, exist_ok=True)
            for d in ("lm", "tokenizer"):
                shutil.copytree(work / "fold0" / d, out / d)
        t_train = results.get(str(k), {}).get("train_s")  # a rescore keeps the training time it had
        if not a.rescore:
            t = time.perf_counter()
            train_stage1(OmegaConf.create(OmegaConf.to_container(cfg)), a.synth, out, resume=True,
                         progress=not a.quiet, extra_data=(real,), exclude_speakers=tuple(held))
            t_train = time.perf_counter() - t
        if bool(cfg.stage1.reader) and not (out / READER_FILE).is_file():  # a fold trained before the reader
            fit_stage1_reader(cfg, enc, (Path(a.synth), real), out, tuple(held), progress=not a.quiet)
        model, mcfg = load_stage1(out)
        gen = Instructor.from_model(model, mcfg)
        if bool(cfg.stage1.reader):
            gen.load_reader(out)
        gen.emotion_guidance = float(cfg.stage1.emotion_guidance)  # inference settings: the config's
        pad = float(cfg.stage1.get("listen_pad_s", 0.0) or 0.0)
        gen.cfg = gen.hearing.cfg = OmegaConf.merge(gen.cfg, {"stage1": {"listen_pad_s": pad}})
        # the held-out actors' clips, whatever split the import gave them
        bank = FeatureBank(sources=[(real, cache, None, None, 0, ())], split="train")
        idx = [i for i, c in enumerate(bank.clips) if c.speaker in held]
        said, texts, aux, logits, voted = [], [], [], [], []
        from avitalk import audio as audio_io
        from avitalk.vocab import EMOTIONS

        audios = [audio_io.load(real / bank.clips[i].audio) for i in tqdm(idx, desc=f"fold {k}: reading", disable=a.quiet)]
        if pad > 0:  # stage 1 hears each clip between even margins (stage1.listen_pad_s): encode it as heard
            rows = [gen.hearing.rows(x, None, enc) for x in tqdm(audios, desc=f"fold {k}: listening", disable=a.quiet)]
        utts = [None if gen.reader is None else gen.hearing.utterance(x, bank.feats[i], enc) for x, i in zip(audios, idx)]
        for s in range(0, len(idx), 32):
            f, m = bank.batch(idx[s : s + 32], augment_p=0.0) if pad <= 0 else pad_arrays(rows[s : s + 32])
            utt = None if utts[0] is None else np.concatenate(utts[s : s + 32])
            for o in gen.generate(f, m, utterance=utt):
                texts.append(o[0])
                said.append(to_instruction(o[0]).emotion)
            with torch.no_grad():  # the Q-Former's own emotion head (a diagnosis: what the LLM could read)
                _, q = model.qformer(f, m)
                pooled = model.qformer.pooled(q)
                z = model.aux(pooled)[:, : len(EMOTIONS)]
                aux += [EMOTIONS[j] for j in z.argmax(-1).tolist()]
                logits += np.round(z.float().numpy(), 4).tolist()
                if utt is not None:  # the emotion reader: what guides the emotion word
                    voted += np.round(gen.emotion.log_probs(pooled, utt).float().numpy(), 4).tolist()
        true = [bank.clips[i].emotion for i in idx]
        rep = emotion_report(said, true)
        rep["qformer_head_accuracy"] = float(np.mean([x == t for x, t in zip(aux, true)]))
        rep["head_logits"] = logits  # for the head's calibration (summary.json: head_calibration)
        rep["head_labels"] = [EMOTIONS.index(t) for t in true]
        if voted:
            rep["voted_log_probs"] = voted
            rep["voted_accuracy"] = float(np.mean([EMOTIONS[int(np.argmax(v))] == t for v, t in zip(voted, true)]))
        rep.update({"held_out": held, "train_s": t_train, "emotion_guidance": gen.emotion_guidance,
                    "examples": [{"id": bank.clips[i].id, "true": t, "text": x} for i, t, x in list(zip(idx, true, texts))[:6]]})
        if a.concat > 1:
            rep["concat"] = concatenated_accuracy(gen, enc, real, [bank.clips[i] for i in idx], a.concat, seed=k)
            print(f"fold {k}: {a.concat} clips joined: {rep['concat']['accuracy']:.1%} of {rep['concat']['clips']}")
        if a.synth_val:
            rep["synth_val"] = synth_accuracy(gen, enc, Path(a.synth), "val", quiet=a.quiet)
            print(f"fold {k}: SynthTalk validation {rep['synth_val']['accuracy']:.1%} of {rep['synth_val']['clips']}")
        results[str(k)] = rep
        atomic_write_json(results_path, results)
        voted_s = f", emotion reader {rep['voted_accuracy']:.1%}" if voted else ""
        print(f"fold {k} ({', '.join(held)}): {rep['accuracy']:.1%} of {rep['clips']} clips (Q-Former head "
              f"{rep['qformer_head_accuracy']:.1%}{voted_s}; emotion guidance {gen.emotion_guidance:g})", flush=True)
    done = [results[str(k)] for k in range(a.folds) if str(k) in results]
    if done:
        pooled = {"counts": np.sum([r["confusion"]["counts"] for r in done], 0).tolist()}
        rows, cols = done[0]["confusion"]["rows"], done[0]["confusion"]["columns"]
        counts = np.asarray(pooled["counts"])
        acc = sum(counts[i, cols.index(e)] for i, e in enumerate(rows)) / counts.sum()
        summary = {"accuracy_pooled": float(acc), "clips": int(counts.sum()),
                   "per_fold": [r["accuracy"] for r in done], "held_out": [r["held_out"] for r in done],
                   "qformer_head_per_fold": [r.get("qformer_head_accuracy") for r in done],
                   "voted_per_fold": [r.get("voted_accuracy") for r in done],
                   "emotion_guidance": [r.get("emotion_guidance", 0.0) for r in done],
                   **pooled_concat(done), **pooled_synth(done),
                   "per_emotion": {e: float(counts[i, cols.index(e)] / max(1, counts[i].sum())) for i, e in enumerate(rows)},
                   "confusion": {"rows": rows, "columns": cols, "counts": counts.tolist()}, "accuracy": float(acc)}
        vcal = head_calibration(done, "voted_log_probs")
        if vcal:
            summary["voted_calibration"] = vcal
            print(f"emotion reader (as voted): temperature {vcal['temperature']:.2f} (all folds); fitted on the other "
                  f"folds, calibration error {vcal['before']['ece']:.3f} -> {vcal['after']['ece']:.3f}")
        cal = head_calibration(done)
        if cal:
            summary["head_calibration"] = cal
            print(f"emotion head: temperature {cal['temperature']:.2f} (all folds); fitted on the other folds, the "
                  f"held-out clips' calibration error {cal['before']['ece']:.3f} -> {cal['after']['ece']:.3f}")
        atomic_write_json(work / "summary.json", summary)
        plot_confusion(summary, work / "confusion.png",
                       f"stage 1 on unseen actors: {acc:.1%} ({int(counts.sum())} clips, {len(done)} folds)")
        print(json.dumps({k: v for k, v in summary.items() if k != "confusion"}, indent=1))


if __name__ == "__main__":
    import sys

    from avitalk.errors import AvitalkError

    try:
        main()
    except AvitalkError as e:  # a missing folder or a bad config: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)  # a usage mistake, as the CLI and argparse answer it
