"""`avitalk live --window`: the face in a Tk window (under Xvfb when there is no display), redrawn as the stream goes
and captioned with the instruction in force; without a display, one line."""

import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from avitalk.types import Audio

from .conftest import build_tiny_pipeline, speechlike

tkinter = pytest.importorskip("tkinter", reason="Python without Tk")


@pytest.fixture()
def display(monkeypatch):
    """A display: the one there is, or a fresh Xvfb (apt install xvfb)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if not shutil.which("Xvfb"):
        pytest.skip("no display and no Xvfb")
    for n in range(90, 120):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            break
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                break
            time.sleep(0.1)
        monkeypatch.setenv("DISPLAY", f":{n}")
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_window_draws_the_stream_and_its_instruction(display):
    from avitalk.top.live import LiveSession, WavSource, run_live
    from avitalk.top.live_window import LiveWindow

    session = LiveSession(build_tiny_pipeline(), lookahead_ms=40, context_s=1.0)
    win = LiveWindow(session, size=96)
    stop, finished, seen = threading.Event(), threading.Event(), []

    def stream():
        run_live(session, WavSource(Audio(speechlike(2.0, seed=8)), chunk_ms=20), [win],
                 stop=stop, changes=[(1.0, "A surprised person speaks.")])
        finished.set()

    def watch():  # what is on screen, every 0.1 s
        while not finished.is_set():
            if win.image is not None:
                seen.append(win.image.copy())
            time.sleep(0.1)

    threading.Thread(target=stream, daemon=True).start()
    threading.Thread(target=watch, daemon=True).start()
    win.run(stop, finished)
    assert finished.is_set()
    assert win.draws >= 10 and win.shown == 49  # redrawn as frames came (at most 25 a second), the last one shown
    assert win.image.shape == (96, 96, 3) and len({im.tobytes() for im in seen}) >= 5  # the face moved
    caption = win.caption.cget("text")
    assert win.close() == {"frames_drawn": win.draws} and win.root is None  # Tk freed here, in its own thread
    assert caption == "A surprised person speaks."


def test_window_without_a_display_is_one_line(cli, wav_file, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    code, out, err = cli("live", "--input", wav_file(seconds=1.0), "--window")
    assert code == 2 and "display" in err and "--serve" in err and err.count("\n") == 1
