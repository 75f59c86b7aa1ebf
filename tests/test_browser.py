"""The live page in a real browser (Debian's headless chromium, driven by Playwright), a WAV file as the microphone."""
import os
import shutil

import numpy as np
import pytest
import torch

from talkface.pipeline import Animator
from talkface.serve import Limits, make_app

from conftest import ServerThread, speech_like, write_audio

CHROMIUM = os.environ.get("TALKFACE_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"),
]


# Installed before the page loads: after each frame is drawn, keep its mouth patch and a checksum of the top strip.
PROBE = """
window.__probes = [];
const draw = CanvasRenderingContext2D.prototype.drawImage;
CanvasRenderingContext2D.prototype.drawImage = function (...args) {
  draw.apply(this, args);
  const tf = window.talkface;
  if (!tf || !tf.face || this.canvas.id !== "canvas" || tf.lastIndex < 0) return;
  const [mx, my] = tf.face.mouth, r = Math.round(tf.face.face_size * 0.6), c = this.canvas;
  const mouth = this.getImageData(Math.round(mx - r), Math.round(my - r / 2), 2 * r, r).data;
  const top = this.getImageData(0, 0, c.width, Math.round(c.height * 0.12)).data;
  let sum = 0;
  for (let i = 0; i < top.length; i++) sum += top[i];
  window.__probes.push({ index: tf.lastIndex, mouth: Array.from(mouth), top: sum });
};
"""


def test_page_streams_the_microphone_and_the_mouth_moves_with_speech(tiny_weights, tmp_path):
    # the fake microphone: 1.2 s of silence, then 2 s of speech (chromium loops the file)
    audio = np.concatenate([np.zeros(int(1.2 * 16000), np.float32), speech_like(2.0, seed=1) * 2.5, np.zeros(8000, np.float32)])
    wav = write_audio(tmp_path / "mic.wav", audio)
    animator = Animator(tiny_weights, device="cpu", backend="torch")
    # Only sound may move the face here: the noise input's weights are zeroed, so that in silence the
    # frames settle to one image (a model trained for 2 steps moves the mouth only a little with sound).
    m = animator.cfg.model
    noise = slice(m.audio.dim + m.identity.dim, None)  # the latent is (audio, identity code, noise)
    with torch.no_grad():
        animator.generator.decoder.t1[0].weight[noise] = 0
        for stage in animator.generator.decoder.stages:
            if isinstance(stage["latent"], torch.nn.Linear):
                stage["latent"].weight[:, noise] = 0
    server = ServerThread(make_app(animator, Limits(backlog_seconds=60), workers=2))  # a busy test machine may lag
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
                    "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                ],
            )
            page = browser.new_page()
            page.add_init_script(PROBE)
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.click("#example")
            page.wait_for_function("window.talkface.face !== null", timeout=60_000)
            page.click("#mic")
            # until frame 75 is drawn (past the speech)
            page.wait_for_function("window.talkface.lastIndex >= 75", timeout=90_000, polling=200)
            snaps = page.evaluate("window.__probes")
            stats = page.evaluate("({frames: window.talkface.frames, e2e: window.talkface.e2e.length, errors: window.talkface.errors})")
            page.click("#stop")
            browser.close()
    finally:
        server.close()
    assert not stats["errors"], stats["errors"]
    assert stats["frames"] >= 20 and stats["e2e"] > 0, stats  # frames arrived, latency measured
    mouth = {s["index"]: np.array(s["mouth"], float) for s in snaps}
    # frames up to 22 hear only silence (their windows end before 1.2 s; from 14 on the GRUs have
    # settled); 35..70 hear speech
    silent = [i for i in mouth if 14 <= i <= 22]
    speech = [i for i in mouth if 35 <= i <= 70]
    assert silent and speech, sorted(mouth)
    ref = mouth[silent[-1]]
    change_silent = max(np.abs(mouth[i] - ref).mean() for i in silent)
    change_speech = max(np.abs(mouth[i] - ref).mean() for i in speech)
    assert change_speech > max(0.15, 3 * change_silent), (change_silent, change_speech)
    assert len({s["top"] for s in snaps}) == 1  # away from the face nothing changes
