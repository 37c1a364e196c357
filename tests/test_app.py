"""The web app's work (AppSession) on a tiny random pipeline, and the page's construction."""

from pathlib import Path

import numpy as np
import pytest

from avitalk.audio import save_wav
from avitalk.errors import AudioError
from avitalk.types import Audio

from .conftest import build_tiny_pipeline


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from avitalk.top.app import AppSession

    return AppSession(build_tiny_pipeline(), tmp_path_factory.mktemp("app"), size=64, max_duration_s=5.0)


@pytest.fixture()
def clip(tmp_path):
    t = np.arange(int(1.6 * 16000)) / 16000
    return str(save_wav(tmp_path / "s.wav", Audio((0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32))))


def test_listen_edit_synthesize(session, clip):
    from avitalk.render.gltf import read_glb
    from avitalk.render.video import probe_video

    r = session.listen(clip, alternatives=3)
    assert r["text"] and r["parsed"]["text"] == r["text"] and r["text"] not in r["alternatives"]
    assert len(r["heard"]) == 8 and abs(sum(r["heard"].values()) - 1) < 1e-5
    edited = session.rewrite("A delighted person speaks with lip corner very lifted.", "angry", 3)
    assert "furious" in edited or "enraged" in edited or "livid" in edited
    out = session.synthesize(clip, edited, samples=2, seed=1)
    assert len(out["videos"]) == 2 and out["plot"].is_file()
    v = probe_video(out["videos"][0])
    assert v["duration"] > 0 and v["audio_codec"] == "aac"
    assert read_glb(out["glb"][0])[0]["asset"]["version"] == "2.0"
    assert all(str(p).startswith(str(session.out_dir)) for p in out["videos"] + out["npz"] + out["glb"])
    assert session.history[-1]["text"] == edited and session.history[-1]["first_video_s"] > 0
    # the history can be picked back for side-by-side comparison
    label = session.history_choices()[-1]
    assert session.history_video(label) == str(out["videos"][0]) and session.history_video(None) is None


def test_add_action_rewrites_the_sentence(session):
    from avitalk.vocab import load_vocabulary

    t = session.add_action("A furious man speaks with brow strongly lowered.", "AU24_lip_press", 0.9)
    assert t.startswith("A furious man speaks with brow strongly lowered, and ") and t.endswith(".")
    parsed = load_vocabulary().parse(t)
    assert {a for a, _ in parsed["actions"]} == {"AU04_brow_lower", "AU24_lip_press"}
    assert session.add_action("A calm person speaks.", "AU12_lip_corner_pull", 0.3).startswith("A calm person speaks with ")
    with pytest.raises(Exception, match="unknown facial action"):
        session.add_action("A calm person speaks.", "AU99_nothing", 0.5)


def test_uploads_over_the_limits_are_refused(session, tmp_path):
    t = np.arange(6 * 16000) / 16000
    long = save_wav(tmp_path / "long.wav", Audio((0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32)))
    with pytest.raises(AudioError, match="limit is 5"):
        session.listen(str(long))
    with pytest.raises(AudioError, match="upload or record"):
        session.synthesize(None, "A sad man speaks.")
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(AudioError, match="not an audio file"):
        session.listen(str(tmp_path / "notes.txt"))


def test_the_page_builds(session):
    from avitalk.top.app import build_app

    page = build_app(session)
    assert page is not None and type(page).__name__ == "Blocks"


@pytest.mark.slow
def test_app_command_removes_its_temporary_folder(tmp_path):
    """`avitalk app` without --out keeps its outputs in a temporary folder and removes it when stopped (Ctrl-C or kill)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = subprocess.Popen([sys.executable, "-m", "avitalk", "app", "--port", str(port)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            t0 = time.time()
            while time.time() - t0 < 120:
                line = p.stdout.readline()
                if "avitalk app on" in line or not line:
                    break
            assert "removed on exit" in line
            assert [d.name for d in tmp_path.iterdir() if d.name.startswith("avitalk-app-")]
            rest: list[str] = []  # keep reading what the app says, so that a full pipe never blocks it
            reader = threading.Thread(target=lambda: rest.extend(p.stdout), daemon=True)
            reader.start()
            time.sleep(2)
            p.send_signal(sig)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{sig.name}: the app did not stop in 60 s; it said:\n{''.join(rest)[-3000:]}")
            reader.join(10)
        finally:
            p.kill()
        assert not [d.name for d in tmp_path.iterdir() if d.name.startswith("avitalk-app-")], sig


def test_parsed_table_reads_the_text_as_stage_2_will():
    from avitalk.top.app import AppSession

    t = AppSession.parsed_table("A furious man speaks with brow strongly lowered and lip slightly pressed.")
    assert "| emotion | angry |" in t and "| intensity | strong |" in t
    assert "| facial actions | brow lower (strongly), lip press (slightly) |" in t
    assert "none found" in AppSession.parsed_table("Someone mumbles")
    assert "empty" in AppSession.parsed_table("  ")


def test_a_port_in_use_is_one_line_naming_the_option(cli):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, out, err = cli("app", "--port", port)
    assert code == 2 and err.strip().splitlines() == [
        f"error: 127.0.0.1:{port}: cannot serve there (Address already in use); choose another port with --port"]
    assert "GRADIO_SERVER_PORT" not in err


def test_temporary_files_of_the_tests_stay_in_their_own_folder(own_temp_folder):
    """Gradio's uploads and every tempfile of the session land in one folder that the session removes."""
    import os
    import tempfile

    assert Path(tempfile.gettempdir()) == own_temp_folder and own_temp_folder.name.startswith("avitalk-tests-")
    assert Path(os.environ["GRADIO_TEMP_DIR"]).parent == own_temp_folder
    with tempfile.NamedTemporaryFile() as f:
        assert Path(f.name).parent == own_temp_folder


def test_live_tab_streams_the_browsers_microphone_and_takes_a_typed_instruction(session):
    """The Live tab's work: blocks of int16 stereo at 48 kHz as Gradio streams them -> a live session at 16 kHz
    (stage 1 re-reading when no instruction is typed), the newest frame drawn, a line on the instruction in force."""
    from avitalk.errors import AvitalkError

    from .conftest import speechlike

    rate = 48000
    x = speechlike(2.0, seed=2)
    stereo = np.repeat(np.interp(np.arange(2 * rate) / 3, np.arange(len(x)), x)[:, None], 2, 1)
    pcm = (stereo * 32767).astype(np.int16)
    state, images = None, []
    with pytest.raises(AvitalkError, match="microphone"):
        session.live_set(None, "A happy person speaks.")
    for k in range(10):  # the first second, in blocks of 0.1 s
        state, image, line = session.live_chunk(state, (rate, pcm[k * 4800 : (k + 1) * 4800]))
        images.append(image)
    assert state.rereader is not None and "A person speaks." in line and "stage 1 re-reads" in line
    assert abs(state.session.encoder.samples_in - 16000) < 800  # 16 kHz, one channel (less the resampler's delay)
    drawn = [im for im in images if im is not None]
    assert drawn and drawn[-1].shape == (64, 64, 3) and drawn[-1].dtype == np.uint8
    assert images[0] is None  # the first block is shorter than the look-ahead: nothing to draw yet
    session.live_set(state, "A happy person speaks.")
    for k in range(10, 20):
        state, image, line = session.live_chunk(state, (rate, pcm[k * 4800 : (k + 1) * 4800]))
    assert "(typed): A happy person speaks." in line and "re-reads" not in line
    state, said = session.live_stop(state)
    assert state is None and said.startswith("stopped after") and "latency" in said
    state, image, line = session.live_chunk(None, (16000, np.zeros(1600, np.float32)), "A calm person speaks.")
    assert state.rereader is None and "A calm person speaks." in line  # a typed instruction: no re-reading
    session.live_stop(state)
