"""Driving `app.py` as a person does: launch it on 127.0.0.1 in its own process, open it in headless Chromium
(Debian's `chromium` + `chromium-driver`, through Selenium) and go through a round of each tab, taking screenshots.
Used by the app's browser test and by `python -m plum_demo.browser` (the screenshots in `docs/`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1300",
)


def chromium_available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(model, dataset=None, log_path=None, timeout: float = 180):
    """`app.py` serving `model` on a free port of 127.0.0.1; yields its URL, stops it afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "app.py", "--model", str(model), "--trust_remote_code", "--port", str(port)]
    command += ["--device", "cpu"] + (["--dataset", str(dataset)] if dataset else [])
    log = open(log_path or os.devnull, "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode} (see {log_path})")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not answer on {url} in {timeout:.0f} s") from None
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def chromium(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, seconds=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds)


def _click(driver, xpath):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    element = _wait(driver).until(ec.element_to_be_clickable((By.XPATH, xpath)))
    time.sleep(0.5)
    element.click()


def _upload(driver, image_path):
    from selenium.webdriver.common.by import By

    inputs = _wait(driver).until(
        lambda d: [u for u in d.find_elements(By.CSS_SELECTOR, "input[type=file]") if u.is_enabled()]
    )
    inputs[-1].send_keys(str(image_path))


def _open_tab(driver, name):
    _click(driver, f"//button[@role='tab' and contains(., '{name}')]")


def ask_round(driver, url, image_path, screenshot):
    """Upload an image in "Ask", answer and segment, screenshot."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _upload(driver, image_path)
    _click(driver, "//button[contains(., 'answer and segment')]")
    _wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img")) >= 2)
    time.sleep(2)
    driver.save_screenshot(str(screenshot))


def highlight_round(driver, url, image_path, screenshot):
    """Upload an image in "Highlight", segment the typed words, screenshot."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _open_tab(driver, "Highlight")
    _upload(driver, image_path)
    _click(driver, "//button[normalize-space()='segment']")
    _wait(driver).until(
        lambda d: "door" in d.page_source and len(d.find_elements(By.CSS_SELECTOR, "img")) >= 2
    )
    time.sleep(2)
    driver.save_screenshot(str(screenshot))


def browse_round(driver, url, screenshot):
    """Show one PARTONOMY question in the browser tab, screenshot."""
    driver.get(url)
    _open_tab(driver, "PARTONOMY")
    _click(driver, "//button[normalize-space()='show']")
    _wait(driver).until(lambda d: "IoU per part" in d.page_source)
    time.sleep(2)
    driver.save_screenshot(str(screenshot))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="screenshots of app.py's three tabs (for docs/)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="outputs/partonomy")
    parser.add_argument("--image", required=True, help="the image to ask about")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (
        running_app(args.model, args.dataset, out / ".app.log") as url,
        chromium(out / ".chromium") as driver,
    ):
        ask_round(driver, url, Path(args.image).resolve(), out / "app_ask.png")
        highlight_round(driver, url, Path(args.image).resolve(), out / "app_highlight.png")
        browse_round(driver, url, out / "app_partonomy.png")
    shutil.rmtree(out / ".chromium", ignore_errors=True)
    (out / ".app.log").unlink(missing_ok=True)
    print(
        f"wrote {', '.join(str(out / n) for n in ('app_ask.png', 'app_highlight.png', 'app_partonomy.png'))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
