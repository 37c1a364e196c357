"""The app as a person uses it, in headless Chromium (Debian's chromium + chromium-driver, Selenium): upload a clip,
Listen, replace the emotion word, Synthesize, check a playable video appears, save a screenshot."""

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# headless, and none of Chromium's own connections: this machine's closed network refuses them, many at a time
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")
selenium = pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver (apt install chromium chromium-driver)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_edit_loop_in_a_browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from avitalk.top.app import AppSession, build_app
    from avitalk.audio import save_wav
    from avitalk.data.synthtalk import say
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.types import Audio
    from avitalk.vocab import load_vocabulary

    clip = say("We walked along the river and talked about the summer.", "sad", 3)
    wav = save_wav(tmp_path / "speech.wav", Audio(clip["audio"]))
    session = AppSession(AVITalkingPipeline.from_pretrained().warm_up(), tmp_path / "out", size=256)
    session.out_dir.mkdir()
    page = build_app(session)
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, allowed_paths=[str(session.out_dir)],
                quiet=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (*CHROMIUM_FLAGS, "--window-size=1400,1800"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#speech input[type=file]"))
        upload.send_keys(str(wav))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#speech audio, #speech .waveform-container, #speech wave"))
        time.sleep(1)
        driver.find_element(By.CSS_SELECTOR, "#listen").click()
        box = driver.find_element(By.CSS_SELECTOR, "#instruction textarea")
        wait.until(lambda d: box.get_attribute("value").strip())
        said = box.get_attribute("value")
        heard = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#heard").text)  # how sure stage 1 is
        assert heard.startswith("Heard:") and "%" in heard, heard
        edited = load_vocabulary().replace_emotion(said, "happy", 3)
        assert edited != said
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(edited)
        # the parsed view follows the text as it is typed, before any synthesis
        wait.until(lambda d: "happy" in d.find_element(By.CSS_SELECTOR, "#parsed").text)
        assert not session.history
        driver.find_element(By.CSS_SELECTOR, "#synthesize").click()
        video = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#video0 video"))
        duration = wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#video0 video'); return v && v.readyState >= 1 ? v.duration : 0;"))
        assert duration > 0 and video is not None
        assert session.history and session.history[-1]["text"] == edited  # what was typed is what was synthesized
        shot = Path(os.environ.get("AVITALK_SCREENSHOT", tmp_path / "app.png"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
        page.close()
