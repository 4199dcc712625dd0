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
import tempfile
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
def running_app(model, dataset=None, log_path=None, timeout: float = 180, args=(), env=None):
    """`app.py` serving `model` on a free port of 127.0.0.1 (with more command-line `args` and environment `env`);
    yields its URL, stops it afterwards (SIGTERM, as a service manager does) and waits for it to exit."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    command = [sys.executable, "app.py", "--model", str(model), "--trust_remote_code", "--port", str(port)]
    command += ["--device", "cpu", *(["--dataset", str(dataset)] if dataset else []), *args]
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


def _pick_example(driver, index: int):
    """Click example `index` of the open tab (each tab's examples are thumbnails that fill in its inputs)."""
    from selenium.webdriver.common.by import By

    examples = _wait(driver).until(
        lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button.gallery-item") if b.is_displayed()]
    )
    examples[index].click()
    time.sleep(2)


def _image_or_example(driver, image_path, example: int):
    if image_path is not None:
        _upload(driver, image_path)
    else:
        _pick_example(driver, example)


def ask_round(driver, url, screenshot, image_path=None, example: int = 0):
    """In "Ask": upload an image (or click example `example`, which fills in the object, the question and the
    dataset's answer choices), answer and segment, screenshot."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _image_or_example(driver, image_path, example)
    _click(driver, "//button[contains(., 'answer and segment')]")
    _wait(driver).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "img")) >= 2 + 6 * (image_path is None)
    )
    time.sleep(3)
    driver.save_screenshot(str(screenshot))


def highlight_round(driver, url, screenshot, image_path=None, example: int = 0):
    """In "Highlight": upload an image (or click example `example`, which fills in an answer and its part names),
    segment the typed words, screenshot."""
    driver.get(url)
    _open_tab(driver, "Highlight")
    _image_or_example(driver, image_path, example)
    _click(driver, "//button[normalize-space()='segment']")
    _wait(driver).until(lambda d: _output_images(d) >= 2)
    time.sleep(3)
    driver.save_screenshot(str(screenshot))


def _output_images(driver) -> int:
    """Images shown (in the open tab) other than the example thumbnails."""
    from selenium.webdriver.common.by import By

    return sum(
        1
        for image in driver.find_elements(By.CSS_SELECTOR, "img")
        if image.is_displayed()
        and not image.find_elements(By.XPATH, "ancestor::button[contains(@class, 'gallery-item')]")
    )


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
    parser.add_argument("--image", help="an image to upload (default: click the tab's examples)")
    parser.add_argument("--example", type=int, default=0, help="which example to click")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = Path(args.image).resolve() if args.image else None
    names = ("app_ask.png", "app_highlight.png", "app_partonomy.png")
    with tempfile.TemporaryDirectory(prefix="plum-screenshots-") as scratch:
        with (
            running_app(args.model, args.dataset, Path(scratch) / "app.log") as url,
            chromium(Path(scratch) / "chromium") as driver,
        ):
            ask_round(driver, url, out / names[0], image, args.example)
            highlight_round(driver, url, out / names[1], image, args.example)
            browse_round(driver, url, out / names[2])
    print(f"wrote {', '.join(str(out / name) for name in names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
