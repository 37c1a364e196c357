"""The live face in a browser: a localhost page drawing the exported head (three.js, the head's morph targets) and an
instruction box.

Frames reach the page as server-sent events (``/events``, one JSON line per frame: the morph weights, the frame
number, the instruction in force), and a new instruction goes up as a POST to ``/instruction``: one direction is all the
frames need, and the standard library serves both (no extra dependency). The head is ``avitalk export``'s morph layout
of the model in use (50 expression targets, then six jaw targets: the angle about x, y, z and their squares).
three.js is not shipped with avitalk: the page loads it from ``AVITALK_THREE`` or ``build/web/node_modules/three``
(``make setup`` installs it there with npm).
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from avitalk.errors import AvitalkError

ROOT = Path(__file__).resolve().parents[2]


def three_dir() -> Path:
    """Where three.js is (its ``build/three.module.js`` inside); an AvitalkError saying how to get it when absent."""
    candidates = [Path(os.environ["AVITALK_THREE"])] if os.environ.get("AVITALK_THREE") else []
    candidates += [Path.cwd() / "build" / "web" / "node_modules" / "three", ROOT / "build" / "web" / "node_modules" / "three"]
    for c in candidates:
        if (c / "build" / "three.module.js").is_file():
            return c
    raise AvitalkError("--serve needs three.js: `npm install --prefix build/web three@0.170.0` (make setup does), "
                       "or set AVITALK_THREE to a three.js folder")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>avitalk live</title>
<style>body{margin:0;font:15px system-ui,sans-serif;background:#eef0f5;color:#222}
#bar{display:flex;gap:8px;padding:10px;align-items:center}#ins{flex:1;padding:6px;font-size:15px}
#now{padding:0 10px 6px;color:#555}canvas{display:block;margin:0 auto}</style></head><body>
<div id="bar"><input id="ins" placeholder="A happy person speaks with brow raised."><button id="go">Use</button></div>
<div id="now">instruction: <span id="cur"></span> <span id="msg"></span></div>
<script type="importmap">{"imports": {"three": "./three/build/three.module.js", "three/addons/": "./three/examples/jsm/"}}</script>
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
const size = Math.min(window.innerWidth, window.innerHeight - 90, 640);
const renderer = new THREE.WebGLRenderer({antialias: true, preserveDrawingBuffer: true});
renderer.setSize(size, size);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xeef0f5);
scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 1.2));
const key = new THREE.DirectionalLight(0xffffff, 2.0);
key.position.set(0.3, 0.4, 1.0);
scene.add(key);
const camera = new THREE.PerspectiveCamera(18, 1, 0.05, 5);
const meshes = [];
window.face = {frames: 0, last: -1, instruction: "", weights: null, ready: false, dark: []};
// ?probe: after each frame, count the dark pixels (an open mouth's inside) in the lower middle of the picture
// (what the browser test reads; cheap next to reading the whole canvas back)
const probe = new URLSearchParams(location.search).has("probe");
function darkPixels() {
  const gl = renderer.getContext(), W = gl.drawingBufferWidth, H = gl.drawingBufferHeight;
  const x = Math.floor(W / 4), y = Math.floor(H * 0.2), w = Math.floor(W / 2), h = Math.floor(H * 0.3);
  const px = new Uint8Array(w * h * 4);
  gl.readPixels(x, y, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
  let n = 0;
  for (let k = 0; k < px.length; k += 4) if (px[k] + px[k + 1] + px[k + 2] < 160) n++;
  return n;
}
new GLTFLoader().load("face.glb", (gltf) => {
  scene.add(gltf.scene);
  gltf.scene.traverse((o) => { if (o.isMesh && o.morphTargetInfluences) meshes.push(o); });
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const c = box.getCenter(new THREE.Vector3());
  camera.position.set(c.x, c.y + 0.02, c.z + 0.55);
  camera.lookAt(c.x, c.y + 0.01, c.z);
  renderer.render(scene, camera);
  window.face.ready = true;
  const es = new EventSource("events");
  let latest = null;
  es.onmessage = (ev) => {
    latest = JSON.parse(ev.data); window.face.frames += 1;
    const sent = window.face.sent;  // sent.received: to the first frame with it that reaches the page
    if (sent && sent.received === null && latest.ins === sent.text) sent.received = performance.now() - sent.t;
  };
  // draw at the display's pace with the newest frame: a slow renderer skips frames instead of falling behind
  function draw() {
    if (latest !== null) {
      const f = latest;
      latest = null;
      for (const m of meshes) for (let k = 0; k < f.w.length; k++) m.morphTargetInfluences[k] = f.w[k];
      renderer.render(scene, camera);
      window.face.last = f.i; window.face.weights = f.w; window.face.instruction = f.ins;
      document.getElementById("cur").textContent = f.ins;
      if (probe) window.face.dark.push([f.i, darkPixels()]);
      const sent = window.face.sent;
      if (sent && sent.reached === null && f.ins === sent.text) sent.reached = performance.now() - sent.t;
    }
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
});
async function send() {
  const text = document.getElementById("ins").value.trim();
  if (!text) return;
  // sent.reached: milliseconds from sending to the first frame drawn with it (the page's own clock)
  window.face.sent = {text: text.split(/\\s+/).join(" "), t: performance.now(), received: null, reached: null};
  const r = await fetch("instruction", {method: "POST", body: text});
  document.getElementById("msg").textContent = r.ok ? "" : await r.text();
}
document.getElementById("go").onclick = send;
document.getElementById("ins").onkeydown = (e) => { if (e.key === "Enter") send(); };
</script></body></html>
"""


def morph_weights(motion: np.ndarray, n_exp: int) -> list[float]:
    """A frame [n_exp + 3] (expression, jaw) -> the exported head's morph weights (expression, jaw, jaw squared)."""
    e, j = motion[:n_exp], motion[n_exp : n_exp + 3]
    return [round(float(v), 5) for v in np.concatenate([e, j, j * j])]


class LivePage:
    """Serve the page on ``host:port`` (0: any free port) for one :class:`~avitalk.top.live.LiveSession`; use the
    object as a sink of :func:`~avitalk.top.live.run_live`. :meth:`close` stops the server."""

    def __init__(self, session, host: str = "127.0.0.1", port: int = 0, flame_model: str | None = None):
        from avitalk.flame import FlameModel
        from avitalk.render.gltf import export_glb
        from avitalk.types import FlameSequence

        self.session, self.three = session, three_dir()
        model = FlameModel.from_spec(flame_model or session.pipe.cfg.flame_model)
        n = session.stream.synth.decoder.n_motion - 3
        self.n_exp = n
        self._tmp = tempfile.TemporaryDirectory(prefix="avitalk-live-")
        glb = Path(self._tmp.name) / "face.glb"
        export_glb(FlameSequence(np.zeros((1, n), np.float32), np.zeros((1, 3), np.float32)), glb, model, layout="morph")
        self.glb = glb.read_bytes()
        self._subs: list[queue.Queue] = []
        self._lock = threading.Lock()
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                if path == "/face.glb":
                    return self._send(200, page.glb, "model/gltf-binary")
                if path == "/state":
                    return self._send(200, json.dumps({"instruction": page.session.instruction}).encode(),
                                      "application/json")
                if path.startswith("/three/"):
                    f = (page.three / path[len("/three/") :]).resolve()
                    if page.three.resolve() in f.parents and f.is_file():
                        ctype = "text/javascript" if f.suffix == ".js" else "application/octet-stream"
                        return self._send(200, f.read_bytes(), ctype)
                    return self._send(404, b"not found", "text/plain")
                if path == "/events":
                    return page._stream(self)
                return self._send(404, b"not found", "text/plain")

            def do_POST(self):
                if self.path.split("?")[0] != "/instruction":
                    return self._send(404, b"not found", "text/plain")
                n = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(min(n, 4096)).decode("utf-8", "replace")
                try:
                    page.session.set_instruction(text)
                except Exception as e:  # noqa: BLE001 - a bad instruction is the page's message, not a crash
                    return self._send(400, str(e).encode(), "text/plain; charset=utf-8")
                return self._send(204, b"", "text/plain")

        try:
            self.server = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as e:
            self._tmp.cleanup()
            raise AvitalkError(f"cannot serve the page on {host}:{port} ({e.strerror or e}); --port 0 picks a free "
                               "port") from None
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="avitalk-live-page")
        self._thread.start()

    def _stream(self, handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        q: queue.Queue = queue.Queue(maxsize=250)  # 10 s of frames; a stalled page loses the oldest
        with self._lock:
            self._subs.append(q)
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                handler.wfile.write(item)
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                if q in self._subs:
                    self._subs.remove(q)

    def __call__(self, frames) -> None:
        """Sink: every frame to every open page."""
        msgs = [("data: " + json.dumps({"i": f.index, "w": morph_weights(f.motion, self.n_exp),
                                        "ins": f.instruction}) + "\n\n").encode() for f in frames]
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            for m in msgs:
                if q.full():
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
                q.put_nowait(m)

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            for q in self._subs:
                try:
                    q.put_nowait(None)
                except queue.Full:
                    pass
        self.server.shutdown()
        self.server.server_close()
        self._tmp.cleanup()
