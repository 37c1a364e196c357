"""``avitalk data``: SynthTalk, importing corpora, statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avitalk.types import SAMPLE_RATE
from avitalk.top.cli.common import _check_output, _fail, _report_import, data_app


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (or complete: finished clips are kept)."),
    clips: int = typer.Option(200, "--clips", "-n", min=1, help="Number of clips."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same corpus."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate a SynthTalk corpus: espeak-ng speech, ground-truth FLAME motion and MeadText-style instructions."""
    import time

    from avitalk.data.synthtalk import generate

    if out.exists() and not out.is_dir():
        _fail(f"{out}: exists and is not a folder")
    t = time.perf_counter()
    manifest = generate(out, clips, seed=seed, workers=workers, progress=not quiet)
    dt = time.perf_counter() - t
    typer.echo(f"wrote {manifest} ({clips} clips in {dt:.1f} s, {clips / dt:.1f} clips/s)")


@data_app.command("say")
def data_say(
    text: str = typer.Argument(..., help="The sentence to speak."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .wav file."),
    emotion: str = typer.Option("happy", help="angry, contempt, disgusted, fear, happy, neutral, sad or surprised."),
    intensity: int = typer.Option(3, min=1, max=3, help="1 weak, 2 medium, 3 strong."),
    speaker: Optional[str] = typer.Option(None, help="SynthTalk speaker (default: an unseen test speaker)."),
    seed: int = typer.Option(0, help="Seed for the speaker's small variations."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
) -> None:
    """Speak one sentence with a SynthTalk voice and emotion (espeak-ng); also writes the ground-truth motion and
    instruction next to it (OUT.flame.npz, OUT.json)."""
    from avitalk.data.synthtalk import say
    from avitalk.io import atomic_write_json
    from avitalk.types import Audio

    _check_output(out, overwrite)
    clip = say(text, emotion, intensity, speaker, seed)
    from avitalk import audio as audio_io

    audio_io.save_wav(out, Audio(clip["audio"], SAMPLE_RATE, str(out)))
    clip["sequence"].save(out.with_suffix(".flame.npz"))
    atomic_write_json(out.with_suffix(".json"), clip["record"])
    typer.echo(f"wrote {out} ({len(clip['audio']) / SAMPLE_RATE:.2f} s, {emotion} {intensity}, speaker {clip['record']['speaker']})")
    typer.echo(f"reference instruction: {clip['record']['instructions'][0]}")


@data_app.command("stats")
def data_stats(
    root: Path = typer.Argument(..., help="Dataset folder (with manifest.jsonl)."),
    plot: Optional[Path] = typer.Option(None, help="PNG with a few clips' jaw and expression curves (default: ROOT/stats.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    learnability: bool = typer.Option(False, help="Also run the learnability checks (emotion from audio, jaw vs loudness)."),
) -> None:
    """Counts per split / emotion / intensity / speaker, durations, and a plot of a few clips."""
    from avitalk.data.manifest import read_manifest, stats
    from avitalk.data.plots import plot_clips

    clips = read_manifest(root)
    st = stats(clips)
    if learnability:
        from avitalk.data.learnability import emotion_from_audio, jaw_envelope_correlation

        emo = emotion_from_audio(root, clips)
        st["learnability"] = {
            "emotion_from_audio_test_accuracy": round(emo["accuracy"], 4),
            "chance": emo["chance"],
            "per_emotion": {k: round(v, 3) for k, v in emo["per_emotion"].items()},
            "jaw_vs_loudness_r": {k: round(v, 4) if isinstance(v, float) else v for k, v in jaw_envelope_correlation(root, clips).items()},
        }
    seen: dict[str, object] = {}
    for c in clips:
        seen.setdefault(c.emotion, c)
    png = plot_clips(root, list(seen.values())[:4], plot or root / "stats.png")
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"{st['clips']} clips, {st['hours']} h, duration {st['duration_s']['min']}-{st['duration_s']['max']} s (median {st['duration_s']['median']})")
    for key in ("split", "emotion", "intensity", "speakers"):
        typer.echo(f"{key:>10}: " + ", ".join(f"{k} {v}" for k, v in st[key].items()))
    if "learnability" in st:
        lr = st["learnability"]
        typer.echo(f"emotion from audio on test speakers: {lr['emotion_from_audio_test_accuracy']:.1%} (chance {lr['chance']:.1%})")
        typer.echo(f"jaw opening vs loudness: mean r = {lr['jaw_vs_loudness_r']['mean_r']:.3f}")
    typer.echo(f"wrote {png}")


@data_app.command("ravdess")
def data_ravdess(
    root: Path = typer.Argument(..., help="Your RAVDESS folder (Actor_XX/*.wav, *.flac or *.mp4)."),
    fits: Optional[Path] = typer.Option(None, help="Folder of per-clip FLAME fits (.npz named like the clip), e.g. "
                                        "from EMOCA. Without it: labelled speech only (no motion), for stage 1."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    openface: Optional[Path] = typer.Option(None, help="Folder of per-clip OpenFace CSVs (action-unit intensities)."),
    test_actors: str = typer.Option("23,24", help="Comma-separated test actors ('none' for no test split)."),
    val_actors: str = typer.Option("21,22", help="Comma-separated validation actors ('none' for none)."),
) -> None:
    """Import RAVDESS speech into avitalk's dataset format (actor-disjoint splits); with --fits, with motion."""
    from avitalk.data.real import import_ravdess

    def ints(s: str) -> tuple[int, ...]:
        if s.strip().lower() in ("", "none"):
            return ()
        try:
            return tuple(int(x) for x in s.split(",") if x.strip())
        except ValueError:
            _fail(f"{s!r}: expected comma-separated actor numbers, e.g. 23,24, or none")
    m = import_ravdess(root, fits, out, openface, ints(test_actors), ints(val_actors))
    _report_import(m)


@data_app.command("speech")
def data_speech(
    root: Path = typer.Argument(..., help="A folder of speech clips that share one label (wav, flac, mp3, m4a, ogg)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    emotion: str = typer.Option("neutral", help="The clips' emotion (read speech: neutral)."),
    intensity: int = typer.Option(2, help="The clips' intensity, 1-3."),
    source: str = typer.Option("speech", help="The corpus's name, kept in the manifest (e.g. librispeech)."),
    holdout: float = typer.Option(0.0, help="Share of speakers put in test (and as many in val); 0: all in train."),
) -> None:
    """Import speech with one label (e.g. plain read English as neutral), audio only, for stage 1. The speaker is
    the file name's part before the first - or _ (LibriSpeech: SPEAKER-CHAPTER-UTTERANCE.flac), else its folder."""
    from avitalk.data.real import import_speech

    _report_import(import_speech(root, out, emotion, intensity, source, holdout))


@data_app.command("mead")
def data_mead(
    root: Path = typer.Argument(..., help="Your MEAD folder (<ID>/audio/<emotion>/level_<n>/<NNN>.m4a)."),
    fits: Path = typer.Option(..., help="Folder of per-clip FLAME fits named like M012_front_neutral_level1_017.npz."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    openface: Optional[Path] = typer.Option(None, help="Folder of per-clip OpenFace CSVs (action-unit intensities)."),
    test_speakers: Optional[str] = typer.Option(None, help="Comma-separated test speaker IDs (default: 10% by hash)."),
    val_speakers: Optional[str] = typer.Option(None, help="Comma-separated validation speaker IDs."),
) -> None:
    """Import MEAD audio with your FLAME fits into avitalk's dataset format (speaker-disjoint splits)."""
    from avitalk.data.real import import_mead

    ids = lambda s: tuple(x.strip() for x in s.split(",") if x.strip()) if s else None  # noqa: E731
    m = import_mead(root, fits, out, openface, ids(test_speakers), ids(val_speakers))
    _report_import(m)


@data_app.command("track")
def data_track(
    videos: Optional[Path] = typer.Argument(None, help="A talking-face video, or a folder of them (mp4, mpg, avi, "
                                            "mov, mkv, webm), searched recursively."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the fits (<video name>.npz) and "
                                       "track_report.json; finished clips are kept on a second run."),
    head: Optional[Path] = typer.Option(None, help="Head model .npz to fit (default: the stand-in; a converted FLAME "
                                        "from `avitalk flame convert`)."),
    workers: int = typer.Option(2, min=1, help="Worker processes (one core each)."),
    landmarks: str = typer.Option("mesh", help="mesh: MediaPipe's 468-point network under ai-edge-litert (installed "
                                  "by make setup); refined: MediaPipe's face mesh with refined lips, in an environment "
                                  "of its own (--install-refined), which reads open mouths more exactly."),
    install: bool = typer.Option(False, "--install", help="Install the tracker's two networks (1.5 MB, copied "
                                 "out of the mediapipe wheel that pip downloads) and stop."),
    install_refined: bool = typer.Option(False, "--install-refined", help="Make the refined tracker's environment "
                                         "(mediapipe 0.10.21 and what it pulls, about 1 GB) and stop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit FLAME expression, jaw and head pose to every frame of talking-face videos (MediaPipe's face networks,
    run offline): training data for stage 2 from anyone's video. `avitalk data ravdess|mead --fits OUT` read them."""
    from avitalk.track.models import install as install_models
    from avitalk.track.run import LANDMARKERS, track_folder

    if install:
        typer.echo(f"face tracker networks in {install_models()}")
        return
    if install_refined:
        from avitalk.track.refined import install as install_env

        typer.echo(f"refined tracker environment in {install_env(progress=not quiet)}")
        return
    if landmarks not in LANDMARKERS:
        _fail(f"--landmarks {landmarks}: one of {', '.join(LANDMARKERS)}")
    if videos is None or out is None:
        _fail("give the videos and -o FITS_FOLDER (or --install)")
    if out.exists() and not out.is_dir():
        _fail(f"{out}: exists and is not a folder")
    rep = track_folder(videos, out, str(head) if head else None, workers=workers, progress=not quiet,
                       landmarks=landmarks)
    speed = f", {rep['new_frames_per_second']} frames/s" if rep["new_frames_per_second"] else ", nothing new to fit"
    typer.echo(f"fitted {rep['fitted']} of {rep['videos']} videos ({rep['skipped']} skipped), {rep['frames']} frames, "
               f"median fit residual {rep['residual_mm_median']} mm{speed}; report: {out / 'track_report.json'}")


@data_app.command("grid")
def data_grid(
    root: Path = typer.Argument(..., help="Your GRID folder: sN/*.mpg and alignments/sN/*.align (any depth)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write (the fits go to OUT/fits/sN/)."),
    fits: Optional[Path] = typer.Option(None, help="Fits made before by `avitalk data track` (FITS/sN/*.npz); "
                                        "without it the videos are tracked now (resumable)."),
    workers: int = typer.Option(2, min=1, help="Tracking processes (one core each)."),
    rest: bool = typer.Option(True, "--rest/--raw", help="Motion relative to each talker's face at rest (default), or "
                              "the fits as they are."),
    landmarks: str = typer.Option("mesh", help="The tracker when the videos are tracked now (see `avitalk data track "
                                  "--help`): mesh or refined."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Import the GRID audiovisual corpus (CC BY 4.0): real talking faces, tracked into FLAME motion, with the
    transcript and word times; split by sentence (5% val, 5% test)."""
    from avitalk.data.grid import import_grid

    from avitalk.track.run import LANDMARKERS

    if landmarks not in LANDMARKERS:
        _fail(f"--landmarks {landmarks}: one of {', '.join(LANDMARKERS)}")
    _report_import(import_grid(root, out, fits, workers=workers, progress=not quiet, rest=rest, landmarks=landmarks))
