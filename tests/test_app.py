"""app.py, launched as a user launches it (its own process, on 127.0.0.1) with a tiny checkpoint and a toy PARTONOMY
folder: its two API names through `gradio_client`, errors as messages, the browser tab, and one "Ask" and one
"Highlight" round in a real browser (headless Debian Chromium through Selenium; skipped where Chromium is absent)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plum_demo.browser import ask_round, chromium, chromium_available, highlight_round, running_app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What visible parts does the car in the image have?"
ANSWER = "The car in the image has the following visible parts: body, door, wheel, and window."


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from modeling_plum.convert import main as convert
    from partonomy_dataset import __main__ as dataset_cli

    root = tmp_path_factory.mktemp("app")
    assert (
        dataset_cli.main(["build", "--config", "toy", "--out", str(root / "data"), "--toy-num-images", "20"])
        == 0
    )
    convert(["--preset", "tiny", "--out", str(root / "plum-tiny")])
    image = Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8))
    image.save(root / "car.png")
    return root


@pytest.fixture(scope="module")
def server(files):
    with running_app(files / "plum-tiny", files / "data", files / "server.log") as url:
        yield url


def test_answer_and_segment_api(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    text, annotated = client.predict(handle_file(str(files / "car.png")), QUESTION, api_name="/answer")
    assert isinstance(text, str)
    with Image.open(annotated) as image:
        assert image.size[0] / image.size[1] == pytest.approx(128 / 96, rel=0.02)  # the image, scaled
    annotated = client.predict(
        handle_file(str(files / "car.png")), QUESTION, ANSWER, "door, wheel", api_name="/segment"
    )
    with Image.open(annotated) as image:
        painted = np.asarray(image.convert("RGB")).astype(int)
        size = image.size
    original = np.asarray(Image.open(files / "car.png").convert("RGB").resize(size, Image.NEAREST)).astype(
        int
    )
    assert (np.abs(painted - original).sum(-1) > 30).any()  # masks were drawn
    with pytest.raises(Exception, match="'wing' is not in the answer"):
        client.predict(
            handle_file(str(files / "car.png")), QUESTION, ANSWER, "door, wing", api_name="/segment"
        )
    with pytest.raises(Exception, match="upload an image"):
        client.predict(None, QUESTION, api_name="/answer")


def test_browser_tab_compares_ground_truth_and_prediction(server):
    from gradio_client import Client

    picture, text = Client(server, verbose=False).predict(0, api_name="/browse")
    assert "IoU per part" in text and "correct" in text
    with Image.open(picture) as image:
        assert image.width > 3 * image.height / 2  # three panels side by side


@pytest.mark.skipif(
    not chromium_available(), reason="Debian's chromium and chromium-driver are not installed"
)
def test_ask_and_highlight_in_a_real_browser(server, files):
    outputs = ROOT / "outputs"
    outputs.mkdir(exist_ok=True)
    with chromium(files / "chromium-profile") as driver:
        ask_round(driver, server, files / "car.png", outputs / "app_ask.png")
        assert "answer" in driver.page_source
        highlight_round(driver, server, files / "car.png", outputs / "app_highlight.png")
        assert "door" in driver.page_source
    for name in ("app_ask.png", "app_highlight.png"):
        with Image.open(outputs / name) as shot:
            assert shot.size[0] >= 1000
