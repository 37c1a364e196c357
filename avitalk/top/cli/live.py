"""``avitalk live``: a microphone (or a recording played at real time) in, the face's motion out as it speaks."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from avitalk.top.cli.common import _fail, app


def _parse_change(s: str) -> tuple[float, str]:
    t, sep, text = s.partition(":")
    try:
        sec = float(t)
    except ValueError:
        sec = -1.0
    if not sep or sec < 0 or not text.strip():
        _fail(f"--change takes SECONDS:INSTRUCTION (e.g. '3.5:A happy person speaks.'), got {s!r}")
    return sec, " ".join(text.split())


def _read_terminal(session, stop: threading.Event) -> None:
    """Each line typed becomes the instruction in force (a thread; ends with the input)."""
    for line in sys.stdin:
        if stop.is_set():
            return
        text = " ".join(line.split())
        if text:
            try:
                session.set_instruction(text)
                typer.echo(f"\ninstruction: {text}", err=True)
            except Exception as e:  # noqa: BLE001 - a bad line is reported, the stream goes on
                typer.echo(f"\nnot used: {e}", err=True)


@app.command()
def live(
    input: Optional[Path] = typer.Option(None, "--input", help="Play this recording at real time instead of the "
                                         "microphone (wav, flac, mp3, ...)."),
    record: Optional[Path] = typer.Option(None, "--record", help="At the end write instruction.txt, flame.npz, "
                                          "video.mp4 and run.json (with the latency numbers) into this folder."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="The instruction to start with "
                                              "(default: \"A person speaks.\", then stage 1's reading of the voice). "
                                              "Type a new one while it runs."),
    reread: float = typer.Option(4.0, "--reread", min=0.0, help="Every this many seconds stage 1 reads the last "
                                 "6 s of voice and changes the instruction when it hears another emotion (0: never; "
                                 "off with -i or once you type one)."),
    change: list[str] = typer.Option([], "--change", help="A scripted change, SECONDS:INSTRUCTION (repeatable): "
                                     "the instruction in force from that much audio on."),
    lookahead_ms: float = typer.Option(120.0, "--lookahead-ms", min=0.0, help="Audio after a frame that the frame "
                                       "waits for: more is closer to the offline motion, less is sooner."),
    chunk_ms: float = typer.Option(20.0, "--chunk-ms", min=1.0, max=1000.0, help="Audio block size."),
    fast: bool = typer.Option(False, "--fast", help="With --input: as fast as it computes, not at real time."),
    seconds: Optional[float] = typer.Option(None, "--seconds", min=0.1, help="Stop after this much audio."),
    seed: int = typer.Option(0, help="Seed of the style sampled for each instruction."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Pipeline checkpoint folder (default: the "
                                              "embedded one)."),
    flame_model: Optional[str] = typer.Option(None, "--flame-model", help="FLAME model .npz for the video."),
    no_render: bool = typer.Option(False, "--no-render", help="With --record: no video.mp4."),
    size: int = typer.Option(512, help="Video width and height in pixels (even)."),
    serve: bool = typer.Option(False, "--serve", help="Show the face in a browser page on localhost (three.js; "
                               "an instruction box changes it)."),
    window: bool = typer.Option(False, "--window", help="Show the face in a window on this desktop (Tk), drawn at "
                                "25 fps."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="The page's port (0: any free one)."),
    threads: int = typer.Option(1, "--threads", min=1, max=64, help="Threads for the model work (one is fastest "
                                "for a stream on a laptop; docs/live.md)."),
    mic_device: Optional[str] = typer.Option(None, "--mic-device", help="Input device name or number (default: "
                                             "the system's)."),
    overwrite: bool = typer.Option(False, help="Replace avitalk's outputs in the --record folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
) -> None:
    """Speak (or play a recording) and the face moves as you do: frames at 25 fps, each as soon as its look-ahead has
    arrived. Ctrl-C ends it, keeping what was recorded."""
    import time

    from avitalk import audio as audio_io
    from avitalk.io import OutputFolder
    from avitalk.top import live as L

    if size % 2 or size < 16:
        _fail(f"--size must be an even number of pixels >= 16, got {size}")
    changes = [_parse_change(c) for c in change]
    if instruction is not None and not instruction.strip():
        _fail("--instruction is empty (write one sentence describing the face)")
    if fast and input is None:
        _fail("--fast needs --input (a microphone runs at real time)")
    if input is not None:
        source = L.WavSource(audio_io.load(input), chunk_ms, realtime=not fast)
        if seconds is not None:
            from avitalk.types import SAMPLE_RATE, Audio

            source.audio = Audio(source.audio.samples[: int(seconds * SAMPLE_RATE)], source=str(input))
    else:
        device = int(mic_device) if mic_device is not None and mic_device.isdigit() else mic_device
        source = L.MicrophoneSource(chunk_ms, device)  # no microphone: one line naming --input
    if serve:
        from avitalk.top.live_page import three_dir

        three_dir()  # three.js missing: one line now, before any model work
    if window:
        from avitalk.top.live_window import check_display

        check_display()  # no Tk or no display: one line now
    folder = OutputFolder(record, overwrite) if record is not None else None
    if folder is not None:
        folder.check(["instruction.txt", "flame.npz", "run.json", *([] if no_render else ["video.mp4"])])
    say = (lambda m: None) if quiet else (lambda m: typer.echo(m, err=True))
    page = win = None
    try:
        from avitalk.top.pipeline import AVITalkingPipeline

        t = time.perf_counter()
        listen = reread > 0 and instruction is None
        pipe = AVITalkingPipeline.from_pretrained(checkpoint, stage1=listen).warm_up()
        if listen and pipe.instructor is None:
            say(f"{pipe.source} has no stage 1: the instruction stays as it is unless you type one")
            listen = False
        try:  # the look-ahead must fit in the audio a step reads and in the decoder's window
            session = L.LiveSession(pipe, instruction, lookahead_ms=lookahead_ms, seed=seed).warm_up()
        except ValueError as e:
            _fail(f"--lookahead-ms {lookahead_ms:g} is too long: {e}")
        say(f"checkpoint: {pipe.source} ({time.perf_counter() - t:.1f} s); look-ahead {session.lookahead} frames "
            f"({session.lookahead * L.FRAME_S * 1000:.0f} ms); instruction: {session.instruction}")
        stop = threading.Event()
        if seconds is not None and input is None:
            timer = threading.Timer(seconds, stop.set)
            timer.daemon = True
            timer.start()
        if sys.stdin.isatty() and not quiet:
            say("type a new instruction and Enter to change the face's style; Ctrl-C to end")
            threading.Thread(target=_read_terminal, args=(session, stop), daemon=True).start()
        sinks = []
        if window:
            from avitalk.top.live_window import LiveWindow

            win = LiveWindow(session, flame_model=flame_model, size=min(size, 512))
        if serve:
            from avitalk.top.live_page import LivePage

            page = LivePage(session, port=port, flame_model=flame_model)
            sinks.append(page)
            say(f"the face: {page.url}")
            if input is not None:  # a recording waits for its viewer; a microphone does not
                say("waiting for the page to open (Ctrl-C to stop)")
                while page.viewers == 0:
                    time.sleep(0.1)
        taps = []
        rereader = L.Rereader(session, pipe, every_s=reread) if listen else None
        if rereader is not None:
            taps.append(rereader)
            say(f"stage 1 reads the last {rereader.window / L.SAMPLE_RATE:.0f} s of voice every {reread:g} s")
        if folder is not None:
            tap = L.WavTap(folder.staging / ".heard.wav")
            taps.append(tap)
        last, shown = [0.0], [1]  # when progress was last printed; instruction changes already announced

        def progress(s) -> None:
            now = time.perf_counter()
            while len(s.changes) > shown[0]:  # a new instruction in force: say whose and what
                if not quiet and s.authors[shown[0]] == "stage 1":
                    typer.echo(f"\nstage 1 heard: {s.changes[shown[0]][1]}", err=True)
                shown[0] += 1
            if quiet or now - last[0] < 0.5:
                return
            last[0] = now
            f = s.frames[-1]
            typer.echo(f"\r{f.index / L.MOTION_FPS:7.1f} s  frame {f.index:6d}  step {s.steps[-1] * 1000:5.1f} ms ",
                       err=True, nl=False)

        if win is not None:  # Tk wants the main thread: the stream runs in another one
            sinks.append(win)
            result: dict = {}
            finished = threading.Event()

            def work() -> None:
                try:
                    with L.limit_threads(threads):
                        result["timing"] = L.run_live(session, source, sinks, stop=stop, changes=changes,
                                                      progress=progress, taps=taps)
                except BaseException as e:  # noqa: BLE001 - raised again in the main thread
                    result["error"] = e
                finally:
                    finished.set()

            th = threading.Thread(target=work, daemon=True, name="avitalk-live-stream")
            th.start()
            try:
                win.run(stop, finished)
            except KeyboardInterrupt:
                pass
            stop.set()
            th.join()
            win.close()
            win = None
            if "error" in result:
                raise result["error"]
            timing = result["timing"]
        else:
            with L.limit_threads(threads):
                timing = L.run_live(session, source, sinks, stop=stop, changes=changes, progress=progress, taps=taps)
        reread_info = rereader.close() if rereader is not None else None
        if page is not None:
            page.close()
            page = None
        say("")
        lat = timing.get("latency_ms", {})
        say(f"{timing['frames']} frames; latency median {lat.get('median', float('nan')):.0f} ms, p99 "
            f"{lat.get('p99', float('nan')):.0f} ms (look-ahead {timing.get('lookahead_ms', 0):.0f} ms included); "
            f"step median {timing.get('step_ms', {}).get('median', float('nan')):.1f} ms")
        if folder is not None and timing["frames"] == 0:
            say("nothing was heard long enough for a frame; nothing recorded")
            tap.close()
            folder.discard()
            folder = None
        if folder is not None:
            heard = tap.close()
            names = L.record_to(folder.staging, session, heard, timing, render=not no_render, size=size,
                                flame_model=flame_model,
                                extra={"speech": {"path": str(input) if input else "microphone",
                                                  "duration_s": heard.duration},
                                       "seed": seed, "realtime": not fast, "chunk_ms": chunk_ms,
                                       **({"reread": reread_info} if reread_info is not None else {})})
            (folder.staging / ".heard.wav").unlink()
            folder.commit()
            say(f"wrote {record}/ ({', '.join(names)})")
    except BaseException:
        if win is not None:
            win.close()
        if page is not None:
            page.close()
        if folder is not None:
            folder.discard()
        raise
