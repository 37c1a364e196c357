"""`avitalk export`'s .glb in three.js (r170 GLTFLoader, the version `make setup` installs with npm into build/web),
in headless Chromium: it loads, animates, and shows the head's colours (skin, lips, eyes, teeth), not a grey head."""

import functools
import http.server
import io
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
THREE = Path(os.environ.get("AVITALK_THREE", ROOT / "build" / "web" / "node_modules" / "three"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver (apt install chromium chromium-driver)"),
              pytest.mark.skipif(not (THREE / "build" / "three.module.js").is_file(),
                                 reason=f"three.js not found at {THREE} (make setup installs it with npm)")]

PAGE = """<!doctype html><html><body style="margin:0;background:#eef0f5">
<script type="importmap">{"imports": {"three": "./three/build/three.module.js", "three/addons/": "./three/examples/jsm/"}}</script>
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
const renderer = new THREE.WebGLRenderer({antialias: true, preserveDrawingBuffer: true});
renderer.setSize(512, 512);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xeef0f5);
scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 1.2));
const key = new THREE.DirectionalLight(0xffffff, 2.0);
key.position.set(0.3, 0.4, 1.0);
scene.add(key);
const camera = new THREE.PerspectiveCamera(18, 1, 0.05, 5);
new GLTFLoader().load("face.glb", (gltf) => {
  scene.add(gltf.scene);
  const mixer = new THREE.AnimationMixer(gltf.scene);
  mixer.clipAction(gltf.animations[0]).play();
  mixer.setTime(TIME);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const c = box.getCenter(new THREE.Vector3());
  camera.position.set(c.x, c.y + 0.02, c.z + 0.55);
  camera.lookAt(c.x, c.y + 0.01, c.z);
  renderer.render(scene, camera);
  let mesh = null;
  gltf.scene.traverse((o) => { if (o.isMesh && !mesh) mesh = o; });
  window.result = {
    primitives: gltf.scene.children[0].children.length || 1,
    materials: [], vertexColors: mesh.material.vertexColors,
    targets: mesh.morphTargetInfluences.length,
    live: mesh.morphTargetInfluences.filter((w) => Math.abs(w) > 1e-3).length,
    png: renderer.domElement.toDataURL("image/png"),
  };
  gltf.scene.traverse((o) => { if (o.isMesh) window.result.materials.push(o.material.name); });
}, undefined, (e) => { window.result = {error: String(e)}; });
</script></body></html>"""


def headless_chromium(width: int, height: int):
    """Headless Chromium drawing WebGL in software (SwiftShader), as on a machine without a GPU."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
              "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", f"--window-size={width},{height}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def test_glb_renders_in_threejs_with_the_heads_colours(tmp_path):
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    from avitalk.flame.standin import demo_sequence
    from avitalk.render.gltf import export_glb

    seq = demo_sequence(3.0)
    t_open = float(np.argmax(seq.jaw_pose[:, 0]) / seq.fps)  # the widest jaw opening: teeth in view
    export_glb(seq, tmp_path / "face.glb")
    (tmp_path / "three").symlink_to(THREE, target_is_directory=True)
    (tmp_path / "index.html").write_text(PAGE.replace("TIME", f"{t_open:.3f}"))
    server, port = _serve(tmp_path)
    driver = headless_chromium(600, 600)
    try:
        driver.get(f"http://127.0.0.1:{port}/index.html")
        res = WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.result || null"))
    finally:
        driver.quit()
        server.shutdown()
    assert "error" not in res, res.get("error")
    assert res["targets"] == 56 and res["live"] > 10 and res["vertexColors"]
    assert {"skin", "lips", "eyes", "teeth", "mouth"} <= set(res["materials"])
    import base64

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["png"].split(",", 1)[1]))).convert("RGB")).astype(int)
    shot = os.environ.get("AVITALK_GLTF_SCREENSHOT")
    if shot:
        Image.fromarray(img.astype(np.uint8)).save(shot)
    R, G, B = img[..., 0], img[..., 1], img[..., 2]
    skin = (R > G + 15) & (G > B + 5) & (R > 90)  # warm skin tones, lit or shaded
    lips = (R > G + 50) & (R > 90) & (abs(G - B) < 30)  # the reddish vermilion
    white = (R > 180) & (G > 170) & (B > 150) & (R - B < 50)  # teeth and the whites of the eyes
    grey = (abs(R - G) < 8) & (abs(G - B) < 8) & (R < 200)  # what the file used to look like
    assert skin.mean() > 0.2, skin.mean()
    assert lips.sum() > 300 and white.sum() > 100, (lips.sum(), white.sum())
    assert grey.mean() < 0.05, grey.mean()
