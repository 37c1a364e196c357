"""The web app's Live tab in headless Chromium, its microphone fed from a recording (Chromium's fake capture device):
the face appears and changes as the speech plays, stage 1's line on the instruction in force shows, and an instruction
typed in the tab takes over."""

import time

import numpy as np
import pytest

from .test_app_browser import CHROMIUM, CHROMIUM_FLAGS, DRIVER, _free_port

selenium = pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver")]


def test_live_tab_follows_the_microphone_and_a_typed_instruction(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from avitalk.audio import save_wav
    from avitalk.data.synthtalk import say
    from avitalk.top.app import AppSession, build_app
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.types import SAMPLE_RATE, Audio

    x = say("Bob paid for a map of the park by the pier.", "happy", 2)["audio"].astype(np.float32)
    gap = np.zeros(int(0.5 * SAMPLE_RATE), np.float32)
    wav = save_wav(tmp_path / "mic.wav", Audio(np.concatenate([gap, x, gap, x, gap])))  # the fake microphone loops it
    session = AppSession(AVITalkingPipeline.from_pretrained().warm_up(), tmp_path / "out", size=192)
    session.out_dir.mkdir()
    page = build_app(session)
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (*CHROMIUM_FLAGS, "--window-size=1200,1400", "--use-fake-ui-for-media-stream",
              "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        tab = wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Live"])
        tab[0].click()
        record = wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#live_mic button")
                                       if "record" in (b.text + (b.get_attribute("aria-label") or "")).lower()])
        record[0].click()
        src = lambda d: d.execute_script("const i = document.querySelector('#live_face img'); return i ? i.src : '';")
        first = wait.until(src)
        seen = {first}
        t0 = time.perf_counter()
        # the face is redrawn as the speech goes on: here 5 pictures in 1-6 s; a loaded machine works each 0.1 s block
        # in up to 0.4 s (the blocks queue up, none is dropped), so it is given a minute and a half
        while len(seen) < 5 and time.perf_counter() - t0 < 90:
            seen.add(src(driver))
            time.sleep(0.2)
        assert len(seen) >= 5, f"{len(seen)} different pictures in {time.perf_counter() - t0:.0f} s"
        line = driver.find_element(By.CSS_SELECTOR, "#live_in_force").text
        assert "In force" in line and "stage 1 re-reads" in line, line
        box = driver.find_element(By.CSS_SELECTOR, "#live_instruction textarea")
        box.send_keys("A surprised person speaks.")
        driver.find_element(By.CSS_SELECTOR, "#live_use").click()
        wait.until(lambda d: "(typed): A surprised person speaks." in d.find_element(By.CSS_SELECTOR, "#live_in_force").text)
    finally:
        driver.quit()
        page.close()
