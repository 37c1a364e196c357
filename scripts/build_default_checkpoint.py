"""Build the embedded default checkpoint from scratch (``make demo-checkpoint``).

SynthTalk corpus (+ labelled real speech, RAVDESS, when its folder is there) -> stage 2 (lip-sync pretraining with
recording-condition augmentation, on SynthTalk and, given --grid, real talking faces tracked from GRID's videos, and
the lips at plain read speech's aligned /b p m/ and open vowels; diffusion prior) -> tiny LM + stage 1 (SynthTalk +
real speech) -> the emotion reader (SynthTalk + RAVDESS + plain read speech, LibriSpeech; calibrated on
leave-speakers-out folds) -> measurements (stage 1, stage 2, end to end, real-speech mouth metrics) -> one pipeline
folder in float16 with a model card, at avitalk/checkpoints/default. Without the real-speech folder the build is
SynthTalk-only and the card says so.

Every step keeps its output under --work (default build/demo-checkpoint) and is skipped when already finished, so an
interrupted build continues where it stopped. Deterministic for a seed (same corpus, same training order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from omegaconf import OmegaConf

# stage 1's inference settings: taken from the build config, whatever its training folder recorded
STAGE1_INFERENCE = ("emotion_guidance", "listen_pad_s", "reader", "reader_encoder")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="build/demo-checkpoint")
    ap.add_argument("--out", default=None, help="pipeline folder (default: avitalk/checkpoints/default)")
    ap.add_argument("--real", default="../shared/data/ravdess-speech-16k",
                    help="RAVDESS speech folder (Actor_NN/*.flac or .wav); skipped with a warning when missing")
    ap.add_argument("--read", default="../shared/data/librispeech-neutral-16k",
                    help="plain read speech (neutral), for the emotion reader; skipped with a warning when missing")
    ap.add_argument("--reader-only", action="store_true",
                    help="refit only the emotion reader of the pipeline folder --out (default: the embedded one), then "
                         "measure it again and rewrite its card; the networks are kept as they are")
    ap.add_argument("--grid", default=None,
                    help="GRID folder (sN/*.mpg, alignments/sN/*.align): real faces for stage 2's lip-sync pretraining")
    ap.add_argument("--grid-fits", default=None,
                    help="fits made before by `avitalk data track` (FITS/sN/*.npz); without it GRID is tracked now")
    ap.add_argument("--grid-landmarks", default="mesh", choices=("mesh", "refined"),
                    help="the tracker when GRID is tracked now (refined: after `make tracker-refined`)")
    ap.add_argument("--stage2-only", action="store_true",
                    help="retrain only stage 2 of the pipeline folder --out (default: the embedded one), measure again "
                         "and rewrite its card; stage 1 and the emotion reader are kept as they are")
    ap.add_argument("--real-check-actors", default="Actor_01,Actor_22",
                    help="actors whose clips the real-speech mouth metrics use (stage 2 never trains on RAVDESS)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--redo", choices=["stage1", "stage2", "evaluate"], help="rebuild this part (and what depends on it)")
    a = ap.parse_args(argv)

    import torch

    from avitalk.data.real import import_ravdess, import_speech
    from avitalk.data.synthtalk import VERSION as SYNTHTALK_VERSION
    from avitalk.data.synthtalk import generate
    from avitalk.config import load_config
    from avitalk.io import atomic_write_json
    from avitalk.top.pipeline import DEFAULT_CHECKPOINT, AVITalkingPipeline
    from avitalk.eval.end_to_end import evaluate_end_to_end
    from avitalk.eval.stage1 import evaluate_stage1
    from avitalk.eval.stage2 import evaluate_stage2
    from avitalk.stage1_instruct.train import train_stage1
    from avitalk.stage2_synthesis.train import train_stage2

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else DEFAULT_CHECKPOINT
    cfg = load_config(a.config)  # checked against the schema: a misspelt key fails here, naming it
    cfg.seed = a.seed
    progress = not a.quiet
    times_path = work / "build_times.json"  # seconds per step, kept across resumed builds
    times: dict[str, float] = json.loads(times_path.read_text()) if times_path.is_file() else {}
    data, s2, s1, real, read = work / "data", work / "stage2", work / "stage1", work / "real", work / "read"
    grid = work / "grid"
    if a.redo:
        import shutil

        drop = {"stage1": [s1], "stage2": [s2], "evaluate": []}[a.redo]
        drop += [s1 / "metrics.json", s2 / "metrics.json", work / "end_to_end.json", work / "real_speech.json"]
        times.pop(a.redo, None)
        for p in drop:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def step(name: str, done: bool, fn) -> None:
        if done:
            print(f"[skip] {name}: already done")
            return
        print(f"[....] {name}", flush=True)
        t = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t
        atomic_write_json(times_path, times)
        print(f"[done] {name}: {times[name]:.0f} s", flush=True)

    # a corpus of another SynthTalk version is not reused: generate() then refuses it with a clear error
    info = json.loads((data / "dataset.json").read_text()) if (data / "dataset.json").is_file() else {}
    step("corpus", (data / "manifest.jsonl").is_file()
         and info.get("num_clips") == a.clips and info.get("version") == SYNTHTALK_VERSION,
         lambda: generate(data, a.clips, seed=a.seed, progress=progress))
    real_src = Path(a.real)
    if not (real / "manifest.jsonl").is_file() and not real_src.is_dir():
        print(f"[warn] {real_src}: no real speech folder; building from SynthTalk only")
    else:
        step("real speech import", (real / "manifest.jsonl").is_file(),
             lambda: import_ravdess(real_src, None, real, test_actors=(), val_actors=(), progress=progress))
    extra = (real,) if (real / "manifest.jsonl").is_file() else ()
    read_src = Path(a.read)
    if not (read / "manifest.jsonl").is_file() and not read_src.is_dir():
        print(f"[warn] {read_src}: no read-speech folder; the emotion reader learns neutral from RAVDESS alone")
    else:
        step("read speech import", (read / "manifest.jsonl").is_file(),
             lambda: import_speech(read_src, read, source="librispeech", progress=progress))
    if a.grid:
        from avitalk.data.grid import import_grid

        step("grid import", (grid / "manifest.jsonl").is_file(),
             lambda: import_grid(a.grid, grid, fits=a.grid_fits, progress=progress, landmarks=a.grid_landmarks))
    elif not (grid / "manifest.jsonl").is_file():
        print("[warn] no --grid: stage 2 learns lip sync from SynthTalk alone")
    motion = (grid,) if (grid / "manifest.jsonl").is_file() else ()
    if a.reader_only:
        return reader_only(a, cfg, out, work, data, real, read, step, progress)

    # plain read speech teaches the lips its aligned /b p m/ and open vowels (stage2.train.lipsync.event_rows)
    events = (read,) if (read / "manifest.jsonl").is_file() and int(cfg.stage2.train.lipsync.event_rows) else ()
    if events:
        from avitalk.eval.bilabial import align_folder

        step("read speech alignment", (read / "aligned_events.json").is_file(), lambda: align_folder(read, progress))

    def train_s2() -> None:
        train_stage2(OmegaConf.create(OmegaConf.to_container(cfg)), data, s2, resume=True, progress=progress,
                     motion_data=motion, event_data=events)
        (s2 / "train_done").write_text("ok\n")
        if int(cfg.stage2.train.stream.steps):
            (s2 / "stream_done").write_text("ok\n")

    def train_live() -> None:  # the live decoder alone, for a stage 2 trained before it existed
        train_stage2(OmegaConf.create(OmegaConf.to_container(cfg)), data, s2, phase="stream", resume=True,
                     progress=progress, motion_data=motion, event_data=events)
        (s2 / "stream_done").write_text("ok\n")

    def live_step() -> None:
        if int(cfg.stage2.train.stream.steps):
            step("stage2 live decoder", (s2 / "stream_done").is_file(), train_live)

    if a.stage2_only:
        return stage2_only(a, cfg, out, work, data, real, grid if motion else None, train_s2, live_step, step,
                           progress)
    step("stage2", (s2 / "prior.safetensors").is_file() and (s2 / "train_done").is_file(), train_s2)
    live_step()
    # the emotion reader is calibrated on leave-speakers-out folds below (with real and read speech): stage 1's
    # training then fits none of its own, which this would replace
    folds_reader = bool(extra) and bool(cfg.stage1.reader) and (read / "manifest.jsonl").is_file()
    step("stage1", (s1 / "qformer.safetensors").is_file(),
         lambda: train_stage1(OmegaConf.create(OmegaConf.to_container(cfg)), data, s1, resume=True, progress=progress,
                              extra_data=extra, with_reader=not folds_reader))
    if folds_reader:
        from avitalk.encoders import audio_encoder_from_config

        step("stage1 emotion reader", (work / "voice-folds" / "reader_done").is_file(),
             lambda: install_reader(audio_encoder_from_config(cfg.stage1.reader_encoder or cfg.audio_encoder), data,
                                    real, read, work, s1, progress))
    step("evaluate stage2", (s2 / "metrics.json").is_file(),
         lambda: atomic_write_json(s2 / "metrics.json", evaluate_stage2(s2, data,
                                                                 lip_seal=bool(cfg.stage2.sampling.lip_seal))))
    step("evaluate stage1", (s1 / "metrics.json").is_file(),
         lambda: atomic_write_json(s1 / "metrics.json", evaluate_stage1(s1, data)))
    pipe = AVITalkingPipeline.from_stages(s1, s2)
    # sampling is an inference setting: the build config's (e.g. the sampler curve's 5 DDIM steps), whatever stage 2's
    # training folder recorded when it was trained
    pipe.cfg.stage2.sampling = cfg.stage2.sampling
    pipe.synthesizer.cfg.stage2.sampling = cfg.stage2.sampling
    for key in STAGE1_INFERENCE:  # likewise stage 1's (emotion guidance, margins, ...): the build config's
        pipe.cfg.stage1[key] = cfg.stage1[key]
        pipe.instructor.cfg.stage1[key] = cfg.stage1[key]
    step("evaluate end to end", (work / "end_to_end.json").is_file(),
         lambda: atomic_write_json(work / "end_to_end.json", evaluate_end_to_end(pipe, data, progress=progress)))

    if extra:
        step("evaluate real speech", (work / "real_speech.json").is_file(),
             lambda: real_check(pipe, real, work, a.real_check_actors, progress))
    if motion:
        step("evaluate real faces", (work / "tracked.json").is_file(), lambda: tracked_check(pipe, grid, work, progress))
    m1 = json.loads((s1 / "metrics.json").read_text())
    m2 = json.loads((s2 / "metrics.json").read_text())
    e2e = json.loads((work / "end_to_end.json").read_text())
    realm = json.loads((work / "real_speech.json").read_text()) if (work / "real_speech.json").is_file() else None
    metrics = {
        "data": {"corpus": "SynthTalk (synthetic espeak-ng speech, procedural ground-truth motion)", "clips": a.clips,
                 "synthtalk_version": SYNTHTALK_VERSION,
                 "seed": a.seed, "test_clips": e2e["clips"], "test_speakers": "12 unseen speakers",
                 "real_speech": ({"corpus": "RAVDESS speech (18 actors, audio only), CC BY-NC-SA 4.0",
                                  "clips": sum(1 for _ in open(real / "manifest.jsonl"))} if extra else None),
                 "read_speech": ({"corpus": "LibriSpeech train-clean-100, one utterance per speaker, CC BY 4.0",
                                  "clips": sum(1 for _ in open(read / "manifest.jsonl"))}
                                 if (read / "manifest.jsonl").is_file() else None)},
        "emotion_reader": reader_metrics(work),
        "real_speech_mouth": ({k: realm[k] for k in ("speakers", "clips", "mouth_stage1", "mouth_neutral")}
                              if realm else None),
        "real_faces": real_faces_metrics(work, grid),
        "stage1": {"with_speech": m1["with_speech"], "speech_tokens_removed": m1["ablation_speech_tokens_removed"]},
        "stage2": {k: m2[k] for k in ("lve_mm", "emotion_accuracy", "diversity")},
        "end_to_end": e2e,
        "build_seconds": times,
    }
    pipe.save_pretrained(out, dtype="float16", model_card=model_card(cfg, metrics), metrics=metrics)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    print(json.dumps({"stage1_emotion": m1["with_speech"]["emotion_accuracy"],
                      "end_to_end_emotion": e2e["emotion_accuracy_end_to_end"],
                      "lve_mm": m2["lve_mm"]["model"], "seconds": times}, indent=2))


GRID_CORPUS = "GRID audiovisual sentence corpus, CC BY 4.0 (Cooke, Barker, Cunningham and Shao, 2006)"


def real_check(pipe, real: Path, work: Path, actors: str, progress: bool) -> None:
    """The mouth on real speech (RAVDESS clips of ``actors``, comma-separated) -> work/real_speech.json."""
    from avitalk.eval.real_speech import evaluate_real_speech
    from avitalk.io import atomic_write_json

    r = evaluate_real_speech(pipe, real, "all", speakers=actors.split(","), progress=progress)
    atomic_write_json(work / "real_speech.json", {k: v for k, v in r.items() if k != "per_clip"})


def tracked_check(pipe, grid: Path, work: Path, progress: bool) -> None:
    """Lip sync against GRID's tracked faces on its held-out test sentences (eval/tracked.py)."""
    from avitalk.eval.tracked import evaluate_tracked
    from avitalk.io import atomic_write_json

    r = evaluate_tracked(pipe, grid, "test", progress=progress)
    atomic_write_json(work / "tracked.json", {k: v for k, v in r.items() if k != "per_clip"})


def real_faces_metrics(work: Path, grid: Path) -> dict | None:
    """The card's GRID numbers: what stage 2 trained on and how it does on the held-out sentences."""
    if not (grid / "manifest.jsonl").is_file():
        return None
    recs = [json.loads(line) for line in open(grid / "manifest.jsonl")]
    t = json.loads((work / "tracked.json").read_text()) if (work / "tracked.json").is_file() else None
    rep = json.loads((grid / "import_report.json").read_text()) if (grid / "import_report.json").is_file() else {}
    return {"corpus": GRID_CORPUS, "talkers": sorted({r["speaker"] for r in recs}),
            "train_clips": sum(r["split"] == "train" for r in recs), "test_clips": sum(r["split"] == "test" for r in recs),
            "landmarks": rep.get("landmarks", "mesh"), "tracked_test": t}


def stage2_only(a, cfg, out: Path, work: Path, data: Path, real: Path, grid: Path | None, train_s2, live_step, step,
                progress: bool) -> None:
    """Retrain stage 2 into the pipeline folder ``out`` (stage 1 and its reader kept), measure it (stage 2, end to end,
    real speech, real faces) and rewrite the folder with its card."""
    from avitalk.eval.end_to_end import evaluate_end_to_end
    from avitalk.eval.stage2 import evaluate_stage2
    from avitalk.io import atomic_write_json
    from avitalk.stage2_synthesis.synthesizer import Synthesizer
    from avitalk.top.pipeline import AVITalkingPipeline

    s2 = work / "stage2"
    step("stage2", (s2 / "prior.safetensors").is_file() and (s2 / "train_done").is_file(), train_s2)
    live_step()
    step("evaluate stage2", (s2 / "metrics.json").is_file(),
         lambda: atomic_write_json(s2 / "metrics.json", evaluate_stage2(s2, data,
                                                                 lip_seal=bool(cfg.stage2.sampling.lip_seal))))
    pipe = AVITalkingPipeline.from_pretrained(out)
    synth = Synthesizer.load(s2, text_encoder=pipe.synthesizer.text_encoder, audio_encoder=pipe.synthesizer.audio_encoder)
    synth.cfg.stage2.sampling = cfg.stage2.sampling
    pipe.synthesizer = synth
    pipe.cfg.stage2 = synth.cfg.stage2
    step("evaluate end to end", (work / "end_to_end.json").is_file(),
         lambda: atomic_write_json(work / "end_to_end.json", evaluate_end_to_end(pipe, data, progress=progress)))

    if (real / "manifest.jsonl").is_file():
        step("evaluate real speech", (work / "real_speech.json").is_file(),
             lambda: real_check(pipe, real, work, a.real_check_actors, progress))
    if grid is not None:
        step("evaluate real faces", (work / "tracked.json").is_file(), lambda: tracked_check(pipe, grid, work, progress))
    metrics = json.loads((out / "metrics.json").read_text())
    m2 = json.loads((s2 / "metrics.json").read_text())
    metrics["stage2"] = {k: m2[k] for k in ("lve_mm", "emotion_accuracy", "diversity")}
    metrics["end_to_end"] = json.loads((work / "end_to_end.json").read_text())
    if (work / "real_speech.json").is_file():
        realm = json.loads((work / "real_speech.json").read_text())
        metrics["real_speech_mouth"] = {k: realm[k] for k in ("speakers", "clips", "mouth_stage1", "mouth_neutral")}
    metrics["real_faces"] = real_faces_metrics(work, grid) if grid is not None else None
    # stage 1's times kept from the card; stage 2's (its live decoder too: trained with it now) are this build's
    kept = {k: v for k, v in metrics.get("build_seconds", {}).items() if not k.startswith("stage2")}
    metrics["build_seconds"] = {**kept, **json.loads((work / "build_times.json").read_text())}
    pipe.save_pretrained(out, dtype="float16", model_card=model_card(pipe.cfg, metrics), metrics=metrics)
    print(json.dumps({"stage2": metrics["stage2"]["lve_mm"], "real_faces": metrics["real_faces"]}, indent=1))


def install_reader(enc, data: Path, real: Path, read: Path, work: Path, s1: Path, progress: bool) -> None:
    """The emotion reader, calibrated on leave-speakers-out folds (scripts/voice_folds.py), into stage 1's folder."""
    from avitalk.stage1_instruct.reader import READER_FILE
    from voice_folds import build_reader

    reader, _ = build_reader(enc, data, real, read, work / "voice-folds", progress=progress)
    reader.save(s1 / READER_FILE)
    (work / "voice-folds" / "reader_done").write_text("ok\n")


def reader_metrics(work: Path) -> dict | None:
    """The model card's numbers of the emotion reader (its folds' summary.json), None without one."""
    p = work / "voice-folds" / "summary.json"
    if not p.is_file():
        return None
    s = json.loads(p.read_text())
    t = s["table"][s["variant"]]
    d = t["decided"]
    return {"folds": s["folds"], "variant": s["variant"], "temperature": t["temperature"], "threshold": t["threshold"],
            "ece": t["ece"], "ece_uncalibrated": t["ece_uncalibrated"],
            "ravdess_clips": d["ravdess"]["clips"], "ravdess_argmax": t["argmax"]["ravdess"]["accuracy"],
            "ravdess_decided": d["ravdess"]["accuracy"], "read_clips": d["librispeech"]["clips"],
            "read_neutral": d["librispeech"]["written_neutral"], "precision": d["non_neutral_precision"],
            "coverage": d["non_neutral_share"], "synth_val_decided": t["synth_val_decided"],
            "without_read_speech": {"ravdess_argmax": s["table"]["acted"]["argmax"]["ravdess"]["accuracy"],
                                    "read_neutral": s["table"]["acted"]["argmax"]["librispeech"]["written_neutral"]}
            if "acted" in s["table"] else None}


def reader_only(a, cfg, out: Path, work: Path, data: Path, real: Path, read: Path, step, progress: bool) -> None:
    """Refit the emotion reader of the pipeline folder ``out`` (networks unchanged), measure end to end and on real
    speech again, and rewrite the folder with its card."""
    from avitalk.io import atomic_write_json
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.eval.end_to_end import evaluate_end_to_end
    from avitalk.stage1_instruct.reader import READER_FILE, EmotionReader

    pipe = AVITalkingPipeline.from_pretrained(out)
    for key in STAGE1_INFERENCE:
        pipe.cfg.stage1[key] = cfg.stage1[key]
        pipe.instructor.cfg.stage1[key] = cfg.stage1[key]
    s1 = work / "stage1-reader"
    s1.mkdir(parents=True, exist_ok=True)
    from avitalk.encoders import audio_encoder_from_config

    enc = audio_encoder_from_config(cfg.stage1.reader_encoder) if cfg.stage1.reader_encoder else pipe.audio_encoder
    step("stage1 emotion reader", (work / "voice-folds" / "reader_done").is_file(),
         lambda: install_reader(enc, data, real, read, work, s1, progress))
    pipe.instructor.reader = EmotionReader.load(s1 / READER_FILE)
    for f in ("end_to_end.json", "real_speech.json"):
        (work / f).unlink(missing_ok=True)
    step("evaluate end to end", False,
         lambda: atomic_write_json(work / "end_to_end.json", evaluate_end_to_end(pipe, data, progress=progress)))

    step("evaluate real speech", False, lambda: real_check(pipe, real, work, a.real_check_actors, progress))
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("real_speech_folds", None)
    metrics["end_to_end"] = json.loads((work / "end_to_end.json").read_text())
    realm = json.loads((work / "real_speech.json").read_text())
    metrics["real_speech_mouth"] = {k: realm[k] for k in ("speakers", "clips", "mouth_stage1", "mouth_neutral")}
    metrics["emotion_reader"] = reader_metrics(work)
    metrics["data"]["read_speech"] = {"corpus": "LibriSpeech train-clean-100, one utterance per speaker, CC BY 4.0",
                                      "clips": sum(1 for _ in open(read / "manifest.jsonl"))}
    pipe.save_pretrained(out, dtype="float16", model_card=model_card(pipe.cfg, metrics), metrics=metrics)
    print(json.dumps({"end_to_end": metrics["end_to_end"], "emotion_reader": metrics["emotion_reader"]}, indent=1))


def model_card(cfg, m: dict) -> str:
    s1, e2e = m["stage1"]["with_speech"], m["end_to_end"]
    lve = m["stage2"]["lve_mm"]
    real = m["data"].get("real_speech")
    read = m["data"].get("read_speech")
    read_licence = ""
    lips = int(OmegaConf.select(cfg, "stage2.train.lipsync.event_rows", default=0) or 0) > 0
    if read:
        who = "The emotion reader and stage 2's lips" if lips else "The emotion reader"
        read_licence = (f"\n\n{who} also learned plain read English from **LibriSpeech** (CC BY 4.0): "
                        "Panayotov V, Chen G, Povey D, Khudanpur S (2015), Librispeech: an ASR corpus based on public "
                        "domain audio books, ICASSP 2015.")
        read = (f", and plain read speech for the emotion reader: {read['clips']} LibriSpeech utterances of "
                f"{read['clips']} speakers, labelled neutral" + (
                    "; their words aligned by the embedded Whisper, stage 2's lips learned to shut at their /b p m/, "
                    "open at their open vowels and rest in their pauses (every fifth speaker held out)" if lips else ""))
    read = read or ""
    faces = m.get("real_faces")
    faces_text = ""
    tracker_flag = f" --landmarks {faces['landmarks']}" if faces and faces.get("landmarks", "mesh") != "mesh" else ""
    if faces:
        faces_text = (f"\n\nStage 2's lip sync also learned from **real talking faces: GRID** (talker "
                      f"{', '.join(faces['talkers'])}, {faces['train_clips']} training clips; the motion tracked from the "
                      f"video by `avitalk data track{tracker_flag}`, relative to the talker's face at rest), CC BY 4.0: "
                      "Cooke M, Barker J, "
                      "Cunningham S, Shao X (2006), An audio-visual corpus for speech perception and automatic speech "
                      "recognition, JASA 120(5): 2421-2424. Its test sentences were never trained on. The face "
                      "tracker's networks are MediaPipe's (Apache-2.0)" + (", its face mesh with refined lips run by "
                      "MediaPipe 0.10.21" if tracker_flag else "") + ".")
    if real:
        data = f"""Built by `make demo-checkpoint` from SynthTalk, our synthetic corpus (version {m['data'].get('synthtalk_version', 1)}, {m['data']['clips']} clips, seed
{m['data']['seed']}: espeak-ng voices reading sentences with 8 emotions x 3 intensities, with procedurally generated ground-truth FLAME
motion for the avitalk stand-in head) **and real emotional speech: RAVDESS** ({real['clips']} audio-only clips of 18
actors; stage 1 only: stage 2 never hears RAVDESS){read}.

**Licence: CC BY-NC-SA 4.0** (attribution, non-commercial, share-alike), inherited from RAVDESS: Livingstone SR,
Russo FA (2018), The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS), PLoS ONE 13(5): e0196391,
https://doi.org/10.1371/journal.pone.0196391. These weights may not be used commercially.{read_licence}{faces_text}"""
    else:
        data = f"""**Trained on synthetic speech only.** Built by `make demo-checkpoint` from SynthTalk ({m['data']['clips']}
clips, seed {m['data']['seed']}): espeak-ng voices with procedurally generated ground-truth FLAME motion for the
avitalk stand-in head. On real recordings stage 1 does not transfer well (see the project README).{faces_text}"""
    fold_rows = ""
    r = m.get("emotion_reader")
    if r:
        fold_rows = (
            f"| emotion reader, unseen speakers ({r['folds']} leave-speakers-out folds): RAVDESS actors, emotion right "
            f"(7 classes; most likely / as written, neutral under the threshold) | {r['ravdess_argmax']:.1%} / "
            f"{r['ravdess_decided']:.1%} ({r['ravdess_clips']} clips) |\n"
            f"| ... plain read speech (LibriSpeech speakers): written neutral | {r['read_neutral']:.1%} "
            f"({r['read_clips']} clips) |\n"
            f"| ... instructions that name an emotion: the right one (precision) / their share | "
            f"{r['precision']:.1%} / {r['coverage']:.1%} |\n"
            f"| ... calibration error of `heard` (ECE; temperature {r['temperature']:.2f}, threshold "
            f"{r['threshold']:.2f}, both fitted on held-out speakers) | {r['ece']:.3f} |\n")
    mouth = m.get("real_speech_mouth")
    if mouth:
        ms, mn = mouth["mouth_stage1"], mouth["mouth_neutral"]
        fold_rows += (f"| real speech ({mouth['clips']} RAVDESS clips): lip gap vs loudness r (median) / silence-rest ratio "
                      f"(median) | {ms['jaw_loudness_r']['median']:.2f} / {ms['silence_rest_ratio']['median']:.3f} |\n")
        if "bilabial" in ms:
            fold_rows += (f"| real speech: lips closed at /b p m/ / open vowels open | "
                          f"{ms['bilabial']['bilabial_closure_rate']:.1%} / {ms['bilabial']['open_vowel_open_rate']:.1%} |\n")
    t = (faces or {}).get("tracked_test")
    if t:
        c = t["closure"]
        fold_rows += (f"| real faces (GRID, {t['clips']} held-out test sentences): lip-gap r with the tracked face (median) "
                      f"/ lip vertex error (mm) | {t['lip_gap_r']['median']:.3f} / {t['lip_vertex_error_mm']['median']:.2f} |\n"
                      f"| real faces: lips closed at /b p m/ / open vowels open (tracked face: "
                      f"{c['tracked']['bilabial_closure_rate']:.1%} / {c['tracked']['open_vowel_open_rate']:.1%}) | "
                      f"{c['generated']['bilabial_closure_rate']:.1%} / {c['generated']['open_vowel_open_rate']:.1%} |\n")
    seal = ("; the lips sealed at /b p m/ where the decoder's reading with \"A person speaks.\" seals them "
            "(`stage2.sampling.lip_seal`)" if cfg.stage2.sampling.get("lip_seal") else "")
    if int(cfg.stage2.train.get("pause_copies", 0) or 0):
        seal += ("; lip sync also learned from every clip between 0.5-3 s of silence, the face at rest in it "
                 "(`stage2.train.pause_copies`)")
    live = (cfg.stage2.train.get("stream") or {}).get("steps", 0)
    if int(live or 0):
        seal += ("; `avitalk live` decodes with its own copy of the decoder, fine-tuned on the windows a live stream "
                 "encodes (`stage2.train.stream`)")
    w = float(cfg.stage1.get("emotion_guidance", 0.0))
    guidance = ""
    if w:
        guidance = ("; the emotion reader (a calibrated logistic regression on the speech's statistics; neutral when "
                    "it is not sure enough) chooses the emotion word" if r else "; the Q-Former's emotion head votes "
                    "on the emotion word") + f" (`stage1.emotion_guidance: {w:g}`)"
    pad = float(cfg.stage1.get("listen_pad_s", 0.0) or 0.0)
    if pad:
        guidance += f"; it hears the speech between {pad:g} s of faint noise on each side (`stage1.listen_pad_s`)"
    return f"""# avitalk embedded default checkpoint

{data}

It is a demonstration and a test fixture; the face is the stand-in head's.

- audio encoder: `{cfg.audio_encoder}` (Whisper tiny.en's layers 2 and 4 + prosody channels, frozen)
- stage 1: Q-Former ({cfg.stage1.qformer.num_queries} queries{' + a listener: one utterance token' if cfg.stage1.qformer.listener else ''}) -> tiny Llama trained by us on the training
  instructions, frozen, LoRA r={cfg.stage1.lora.r}{guidance}
- stage 2: sentence encoder `{cfg.stage2.text_encoder}` (frozen) -> diffusion prior -> {cfg.stage2.style_dim}-d style
  -> lip-sync-pretrained decoder -> FLAME expression (50) + jaw (3) at 25 fps{seal}
- weights: float16 safetensors (loaded as float32); LoRA adapter in peft format

## Measured

SynthTalk rows: the {e2e['clips']} test clips of 12 synthetic speakers never seen in training. Real-speech rows: RAVDESS
actors and LibriSpeech speakers left out of the reader's training (leave-speakers-out folds) and clips stage 2 never saw
(mouth).

| metric | value |
|---|---|
| SynthTalk: the Q-Former's own emotion head (8 classes, chance 12.5%; cached features of the clips as cut) | {s1['emotion_accuracy']:.2%} ({round(s1['emotion_accuracy'] * e2e['clips'])}/{e2e['clips']}) |
| SynthTalk: the instruction's emotion word as `avitalk run` writes it (the emotion reader, neutral under its threshold) | {e2e['stage1_emotion_accuracy']:.2%} ({round(e2e['stage1_emotion_accuracy'] * e2e['clips'])}/{e2e['clips']}) |
| stage 1 intensity accuracy (3 classes) | {s1['intensity_accuracy']:.1%} |
| stage 1 action-unit F1 / BLEU / ROUGE-L | {s1['action_unit_f1']:.2f} / {s1['bleu']:.1f} / {s1['rouge_l']:.2f} |
| stage 1 with the speech tokens removed (emotion) | {m['stage1']['speech_tokens_removed']['emotion_accuracy']:.1%} |
| stage 2 lip vertex error (mm; neutral face / mean motion) | {lve['model']:.2f} ({lve['neutral']:.2f} / {lve['mean_motion']:.2f}) |
| stage 2 emotion read from motion, reference instruction | {m['stage2']['emotion_accuracy']['generated_gt_instruction']:.1%} |
| end to end: emotion read from motion, stage-1 instruction | {e2e['emotion_accuracy_end_to_end']:.2%} ({round(e2e['emotion_accuracy_end_to_end'] * e2e['clips'])}/{e2e['clips']}) |
{fold_rows}
Full numbers: `metrics.json`.
"""


if __name__ == "__main__":
    main()
