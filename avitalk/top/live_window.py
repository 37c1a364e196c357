"""``avitalk live --window``: the face in a desktop window (Tk, Python's own GUI toolkit), redrawn at 25 fps with the
newest frame, the instruction in force under it.

The window is a sink of :func:`avitalk.top.live.run_live` (it only keeps the newest frame); :meth:`LiveWindow.run`
owns the main thread, as Tk needs, and draws with the same offscreen renderer as the videos (about 4 ms a frame at
384 pixels on a laptop core), handing Tk the pixels as a PPM image.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from avitalk.errors import RenderError

from .live import FRAME_S, LiveFrame


def _tk_root():
    try:
        import tkinter
    except ImportError as e:  # Python built without Tk (some minimal images)
        raise RenderError(f"--window needs Python's Tk (tkinter: {e}); on Debian/Ubuntu apt install python3-tk, "
                          "or use --serve") from None
    try:
        return tkinter, tkinter.Tk()
    except tkinter.TclError as e:
        raise RenderError(f"--window needs a display ({e}); use --serve (a browser page) or --record") from None


def check_display() -> None:
    """Raise a one-line RenderError when no window can be opened (no Tk, no display)."""
    _, root = _tk_root()
    root.destroy()


class LiveWindow:
    """Open with ``LiveWindow(session)`` in the main thread (a clear error without Tk or a display); pass it to
    ``run_live`` as a sink from another thread; :meth:`run` until the window is closed or ``stop`` is set."""

    def __init__(self, session, flame_model: str | None = None, size: int = 384, title: str = "avitalk live"):
        tkinter, self.root = _tk_root()
        from avitalk.flame import FlameModel
        from avitalk.render import renderer_for_model

        self._tk = tkinter
        self.session = session
        self.root.title(title)
        self.model = FlameModel.from_spec(flame_model or session.pipe.cfg.flame_model)
        self.renderer = renderer_for_model(self.model, size=size)
        self.face = tkinter.Label(self.root)
        self.face.pack()
        self.caption = tkinter.Label(self.root, text=session.instruction, wraplength=size, justify="left")
        self.caption.pack(fill="x")
        self.newest: LiveFrame | None = None
        self.shown = -1  # index of the frame on screen
        self.draws = 0
        self.image: np.ndarray | None = None  # the pixels on screen
        self._photo = None

    def __call__(self, frames: list[LiveFrame]) -> None:
        if frames:
            self.newest = frames[-1]  # one assignment: the drawing thread reads whole frames

    def draw(self, frame: LiveFrame) -> np.ndarray:
        import torch

        from avitalk.types import FlameSequence

        with torch.no_grad():
            v = self.model.sequence_vertices(FlameSequence.from_motion(np.asarray(frame.motion, np.float32)[None]))[0]
        return self.renderer.render(v)

    def run(self, stop: threading.Event, until: threading.Event | None = None) -> None:
        """Redraw every frame period until the stream has ended (``until``; without it, until ``stop`` is set).
        Closing the window sets ``stop``, which ends the stream."""
        self.root.protocol("WM_DELETE_WINDOW", stop.set)

        def tick() -> None:
            # with ``until``, the window stays until the stream has ended (it ends soon after ``stop``), so that its
            # last frame is drawn; read before the frame
            ended = until.is_set() if until is not None else stop.is_set()
            if ended and self.newest is None:
                self.root.quit()
                return
            f = self.newest
            if f is not None and f.index != self.shown:
                img = np.ascontiguousarray(self.draw(f))
                h, w = img.shape[:2]
                self._photo = self._tk.PhotoImage(data=f"P6 {w} {h} 255 ".encode() + img.tobytes(), format="PPM")
                self.face.configure(image=self._photo)
                if self.caption.cget("text") != f.instruction:
                    self.caption.configure(text=f.instruction)
                self.image, self.shown = img, f.index
                self.draws += 1
            if ended:
                self.root.quit()
                return
            self.root.after(int(FRAME_S * 1000), tick)

        self.root.after(0, tick)
        self.root.mainloop()

    def close(self) -> dict[str, Any]:
        """Release the renderer and the window (in the thread that made them: Tk's images die with their owner)."""
        import gc

        self.renderer.release()
        self._photo = None
        try:
            self.face.configure(image="")
            self.root.destroy()
        except self._tk.TclError:
            pass
        # the Tcl interpreter must be freed in this thread: Tcl aborts the process when another thread frees it
        self.face = self.caption = self.root = None
        gc.collect()
        return {"frames_drawn": self.draws}
