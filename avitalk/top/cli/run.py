"""``avitalk run / synthesize / instruct / vocab``: speech -> instruction -> motion -> video, and its parts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from avitalk.errors import CheckpointError
from avitalk.top.cli.common import MAX_SPEECH_S, _fail, _heard_json, _timed, app


@app.command()
def instruct(
    speech: Path = typer.Argument(..., help="Speech file (wav, flac, ogg, mp3, m4a...)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Pipeline or stage-1 checkpoint folder (default: the embedded one)."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=20, help="How many instructions (sampled when > 1)."),
    seed: int = typer.Option(0, help="Seed for sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with the parsed fields."),
    max_duration: float = typer.Option(30.0, "--max-duration", min=0.1, help="Longest accepted speech in seconds "
                                       "(stage 1 reads at most the first 30 s)."),
    emotion_guidance: _EmotionGuidance = None,
) -> None:
    """Listen to speech and write the audio-visual instruction(s) (stage 1 only; at most 30 s of speech)."""
    from avitalk import audio as audio_io

    speech_audio = audio_io.load(speech, max_duration_s=max_duration)  # longer than 30 s: the first 30 s are read
    if checkpoint is not None and (checkpoint / "stage1.yaml").is_file():  # a folder from `avitalk train stage1`
        from avitalk.stage1_instruct.instructor import Instructor

        model = Instructor.load(checkpoint)
        model.emotion_guidance = emotion_guidance
        from avitalk.encoders import audio_encoder_from_config

        enc = audio_encoder_from_config(model.cfg.audio_encoder)
        feats = enc.encode(speech_audio)
    else:
        from avitalk.top.pipeline import AVITalkingPipeline

        pipe = AVITalkingPipeline.from_pretrained(checkpoint)
        if pipe.instructor is None:
            raise CheckpointError(f"{pipe.source}: this checkpoint has no stage 1; give the instruction yourself")
        model = pipe.instructor
        model.emotion_guidance = emotion_guidance
        enc = pipe.audio_encoder
        feats = enc.encode(speech_audio)
    ins = model.instruct(speech_audio, feats, num_samples=samples, seed=seed, encoder=enc)
    heard = model.heard(speech_audio, feats, enc)
    if as_json:
        typer.echo(json.dumps([{**i.to_dict(), "heard": _heard_json(heard)} for i in ins], indent=2))
    else:
        for i in ins:
            typer.echo(i.text)
        if heard is not None:
            from avitalk.top.pipeline import describe_heard

            typer.echo(f"heard: {describe_heard(heard, None if model.reader is None else model.reader.threshold)}",
                       err=True)




def _warn_if_unknown(text: str) -> None:
    """One warning line when an instruction names no emotion and no facial action of the vocabulary (stage 2 then
    follows the sentence alone, close to a neutral style)."""
    from avitalk.vocab import EMOTIONS, load_vocabulary, parse_instruction

    ins = parse_instruction(text)
    if ins.emotion is None and not ins.actions:
        words = load_vocabulary().emotions
        typer.echo("warning: the instruction names no emotion or facial action that stage 2 knows, so the face keeps "
                   "a near-neutral style; emotion words: " + ", ".join(words[e][2][0] for e in EMOTIONS)
                   + " (`avitalk vocab` lists them all)", err=True)


@app.command("vocab")
def vocab_cmd() -> None:
    """The words stage 2 understands in an instruction: emotions by intensity, facial actions, degree adverbs."""
    from avitalk.vocab import EMOTIONS, load_vocabulary

    v = load_vocabulary()
    typer.echo("emotions (weak | medium | strong):")
    for e in EMOTIONS:
        typer.echo(f"  {e}: " + " | ".join(", ".join(v.emotions[e][k]) for k in sorted(v.emotions[e])))
    typer.echo("facial actions (part + one of its words):")
    for a in v.actions.values():
        typer.echo(f"  {a['part']}: {', '.join(a['participles'])}")
    typer.echo("degrees (weakest first): " + " | ".join(", ".join(d["words"]) for d in v.degrees))
    typer.echo('e.g. "A furious man speaks with brow strongly lowered and lips clearly pressed."')


def _read_instruction(text: Optional[str], file: Optional[Path]) -> Optional[str]:
    if text is not None and file is not None:
        _fail("give --instruction or --instruction-file, not both")
    if file is not None:
        if not file.exists():
            _fail(f"{file}: no such instruction file")
        if file.is_dir():
            _fail(f"{file}: is a directory, not an instruction file")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            _fail(f"{file}: is not UTF-8 text")
        if not text.strip():
            _fail(f"{file}: is empty (write one sentence describing the face)")
    if text is not None and not text.strip():
        _fail("--instruction is empty (write one sentence describing the face)")
    return None if text is None else " ".join(text.split())


@dataclass
class RunOptions:
    """What `avitalk run` and `avitalk synthesize` were asked (one object from the command line to the work)."""

    speech: Path
    out: Path
    instruction: Optional[str] = None
    instruction_file: Optional[Path] = None
    samples: int = 1
    seed: int = 0
    no_render: bool = False
    size: int = 512
    checkpoint: Optional[Path] = None
    flame_model: Optional[str] = None
    overwrite: bool = False
    quiet: bool = False
    as_json: bool = False
    max_duration: float = MAX_SPEECH_S
    emotion_guidance: Optional[float] = None
    need_instruction: bool = False  # synthesize: stage 2 only, the instruction is the user's

    def outputs(self) -> tuple[list[str], list[str]]:
        """The motion files and the videos this run writes."""
        n = self.samples
        names = ["flame.npz"] if n == 1 else [f"flame_{k}.npz" for k in range(n)]
        return names, [] if self.no_render else [x.replace("flame", "video").replace(".npz", ".mp4") for x in names]


def _run_into(tmp: Path, o: RunOptions, speech_audio, text: Optional[str], say, t_all: float,
              load_s: float) -> tuple[dict, dict]:
    """The work of `avitalk run` / `synthesize`, writing its files into ``tmp``; returns run.json's content."""
    import platform
    import time

    import torch
    from tqdm import tqdm

    from avitalk import __version__
    from avitalk.io import atomic_write_json, atomic_write_text
    from avitalk.top.pipeline import AVITalkingPipeline, describe_heard

    timings: dict[str, float] = {"audio_load_s": load_s}
    say(f"speech: {o.speech} ({speech_audio.duration:.2f} s)")
    t = time.perf_counter()
    pipe = AVITalkingPipeline.from_pretrained(o.checkpoint, stage1=text is None).warm_up()
    if pipe.instructor is not None:
        pipe.instructor.emotion_guidance = o.emotion_guidance
    model = None
    if not o.no_render:  # the head is only needed for the video
        from avitalk.flame import FlameModel

        model = FlameModel.from_spec(o.flame_model or pipe.cfg.flame_model)
    timings["load_checkpoint_s"] = time.perf_counter() - t
    say(f"checkpoint: {pipe.source} ({timings['load_checkpoint_s']:.1f} s)")
    res = pipe(speech_audio, text, num_samples=o.samples, seed=o.seed)
    timings.update(res.timings)
    say(f"audio encoder: {res.timings['audio_encoder_s']:.2f} s")
    if "stage1_s" in res.timings:
        say(f"stage 1 (instruction): {res.timings['stage1_s']:.2f} s")
    say(f"instruction ({res.instruction_source}): {res.instruction.text}")
    if res.heard is not None:
        say(f"heard: {describe_heard(res.heard, res.heard_threshold)}")
    say(f"stage 2 (motion, {o.samples} sample{'s' * (o.samples > 1)}): {res.timings['stage2_s']:.2f} s")

    names, videos = o.outputs()
    for name, seq in zip(names, res.sequences):
        seq.save(tmp / name)
    atomic_write_text(tmp / "instruction.txt", res.instruction.text + "\n")
    if videos:
        from avitalk.render import renderer_for_model
        from avitalk.render.video import write_video

        with renderer_for_model(model, size=o.size) as r:
            for name, seq in zip(videos, res.sequences):
                t = time.perf_counter()
                verts = model.sequence_vertices(seq)
                timings["flame_s"] = timings.get("flame_s", 0.0) + time.perf_counter() - t
                frames = tqdm(_timed(r.iter_frames(verts), timings, "render_s"), total=len(verts), unit="frame",
                              desc=f"render {name}", disable=o.quiet or o.as_json or None)
                t = time.perf_counter()
                write_video(tmp / name, frames, fps=seq.fps, audio=speech_audio)
                timings["video_s"] = timings.get("video_s", 0.0) + time.perf_counter() - t
        timings["video_s"] -= timings["render_s"]
    timings["total_s"] = time.perf_counter() - t_all
    info = {
        "avitalk": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "checkpoint": pipe.source, "flame_model": str(o.flame_model or pipe.cfg.flame_model),
        "speech": {"path": str(o.speech), "duration_s": speech_audio.duration},
        "instruction": {**res.instruction.to_dict(), "source": res.instruction_source,
                        "stage1_listened_s": res.listened_s,
                        "heard": _heard_json(res.heard), "heard_threshold": res.heard_threshold},
        "seed": o.seed, "samples": o.samples, "outputs": {"flame": names, "video": videos, "instruction": "instruction.txt"},
        "size": None if o.no_render else o.size,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    atomic_write_json(tmp / "run.json", info)
    return info, timings


def _run(o: RunOptions) -> None:
    import time

    from avitalk import audio as audio_io
    from avitalk.io import OutputFolder

    t_all = time.perf_counter()
    if o.size % 2 or o.size < 16:
        _fail(f"--size must be an even number of pixels >= 16, got {o.size}")
    text = _read_instruction(o.instruction, o.instruction_file)
    if o.need_instruction and text is None:
        _fail("give the instruction: --instruction TEXT or --instruction-file FILE")
    say = (lambda m: None) if o.quiet or o.as_json else (lambda m: typer.echo(m, err=True))
    if text is not None and not o.quiet:
        _warn_if_unknown(text)
    t = time.perf_counter()
    speech_audio = audio_io.load(o.speech, max_duration_s=o.max_duration)
    load_s = time.perf_counter() - t
    folder = OutputFolder(o.out, o.overwrite)  # before any model work: an unusable OUT fails now
    try:
        names, videos = o.outputs()
        folder.check(["instruction.txt", "run.json", *names, *videos])  # a file of the user's in the way: now
        info, timings = _run_into(folder.staging, o, speech_audio, text, say, t_all, load_s)
        kept = folder.commit()
    except BaseException:
        folder.discard()
        raise
    if o.as_json:
        typer.echo(json.dumps(info, indent=2))
    elif not o.quiet:
        parts = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timings.items() if k != "total_s")
        typer.echo(f"wrote {o.out}/ ({', '.join(['instruction.txt', *names, *videos, 'run.json'])})")
        typer.echo(f"timings: {parts}; total {timings['total_s']:.2f} s")
        typer.echo(f"edit {o.out / 'instruction.txt'} and run again with --instruction-file {o.out / 'instruction.txt'}")
    if kept and not o.quiet:
        typer.echo(f"kept {len(kept)} file{'s' * (len(kept) > 1)} in {o.out} that avitalk did not write: "
                   f"{', '.join(kept[:5])}{' ...' * (len(kept) > 5)}", err=True)


# the options `avitalk run` and `avitalk synthesize` share
_Speech = Annotated[Path, typer.Argument(help="Speech file (wav, flac, ogg, mp3, m4a...).")]
_EmotionGuidance = Annotated[Optional[float], typer.Option(
    "--emotion-guidance", min=0.0, help="Weight of stage 1's emotion reader in the instruction's emotion word "
    "(default: the checkpoint config's stage1.emotion_guidance; 0: the LLM alone).")]
_InstructionFile = Annotated[Optional[Path], typer.Option("--instruction-file", "-f", help="Read the instruction from a file.")]
_Samples = Annotated[int, typer.Option("--samples", "-n", min=1, max=16, help="Motion samples (different styles).")]
_Seed = Annotated[int, typer.Option(help="Seed: the same seed gives the same output.")]
_NoRender = Annotated[bool, typer.Option("--no-render", help="Only instruction.txt, flame.npz and run.json.")]
_Size = Annotated[int, typer.Option(help="Video width and height in pixels (even).")]
_Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", help="Pipeline checkpoint folder (default: the embedded one).")]
_FlameModel = Annotated[Optional[str], typer.Option("--flame-model", help="FLAME model .npz (default: the stand-in head).")]
_Overwrite = Annotated[bool, typer.Option(help="Replace avitalk's outputs in OUT if it exists (other files are kept).")]
_MaxDuration = Annotated[float, typer.Option("--max-duration", min=0.1, help="Longest accepted speech in seconds.")]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
_Json = Annotated[bool, typer.Option("--json", help="Print run.json to stdout.")]


@app.command()
def run(
    speech: _Speech,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (instruction.txt, flame.npz, video.mp4, run.json)."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="Your instruction (replaces stage 1)."),
    instruction_file: _InstructionFile = None, samples: _Samples = 1, seed: _Seed = 0, no_render: _NoRender = False,
    size: _Size = 512, checkpoint: _Checkpoint = None, flame_model: _FlameModel = None, overwrite: _Overwrite = False,
    quiet: _Quiet = False, as_json: _Json = False, max_duration: _MaxDuration = MAX_SPEECH_S,
    emotion_guidance: _EmotionGuidance = None,
) -> None:
    """Speech -> instruction (stage 1, editable) -> FLAME motion (stage 2) -> video with the speech."""
    _run(RunOptions(**locals()))


@app.command()
def synthesize(
    speech: _Speech,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="The instruction text."),
    instruction_file: _InstructionFile = None, samples: _Samples = 1, seed: _Seed = 0, no_render: _NoRender = False,
    size: _Size = 512, checkpoint: _Checkpoint = None, flame_model: _FlameModel = None, overwrite: _Overwrite = False,
    quiet: _Quiet = False, as_json: _Json = False, max_duration: _MaxDuration = MAX_SPEECH_S,
) -> None:
    """Stage 2 only: speech + your instruction -> FLAME motion -> video (stage 1 is not loaded)."""
    _run(RunOptions(**locals(), need_instruction=True))
