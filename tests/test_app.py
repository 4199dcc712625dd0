"""app.py, launched as a user launches it (its own process, on 127.0.0.1) with a tiny checkpoint and a toy PARTONOMY
folder: its API names through `gradio_client`, errors as messages, large images bounded and large uploads refused,
its temporary files gone when it stops, a missing dataset folder as a warning, the browser tab, and one "Ask" and one
"Highlight" round in a real browser (headless Debian Chromium through Selenium; skipped where Chromium is absent)."""

import httpx
import numpy as np
import pytest
from PIL import Image

from plum_demo.app_handlers import WORK_SIDE
from plum_demo.browser import ask_round, chromium, chromium_available, highlight_round, running_app

pytestmark = pytest.mark.slow
QUESTION = "What visible parts does the car in the image have?"
ANSWER = "The car in the image has the following visible parts: body, door, wheel, and window."
UPLOAD_LIMIT = "2mb"


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
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(root / "car.png")
    Image.fromarray((rng.random((1000, 1000, 3)) * 255).astype(np.uint8)).save(root / "noise.png")  # ~3 MB
    large = np.full((8000, 8000, 3), 30, np.uint8)  # 64 megapixels; flat areas, so a small file
    large[1500:6000, 1000:7000] = (220, 60, 60)
    Image.fromarray(large).save(root / "large.png")
    return root


@pytest.fixture(scope="module")
def server(files):
    with running_app(
        files / "plum-tiny", files / "data", files / "server.log", args=["--max-file-size", UPLOAD_LIMIT]
    ) as url:
        yield url


def client_for(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_answer_and_segment_api(server, files):
    from gradio_client import handle_file

    client = client_for(server)
    text, annotated = client.predict(handle_file(str(files / "car.png")), QUESTION, api_name="/answer")
    assert isinstance(text, str)
    with Image.open(annotated) as image:
        assert image.size[0] / image.size[1] == pytest.approx(128 / 96, rel=0.02)  # the image, scaled
    annotated = client.predict(
        handle_file(str(files / "car.png")), QUESTION, ANSWER, "wheel, door", api_name="/segment"
    )
    with Image.open(annotated) as image:
        painted = np.asarray(image.convert("RGB")).astype(int)
        size = image.size
    original = np.asarray(
        Image.open(files / "car.png").convert("L").convert("RGB").resize(size, Image.NEAREST)
    )
    assert (np.abs(painted - original.astype(int)).sum(-1) > 30).any()  # masks were drawn
    with pytest.raises(Exception, match="'wing' is not in the answer"):
        client.predict(
            handle_file(str(files / "car.png")), QUESTION, ANSWER, "door, wing", api_name="/segment"
        )
    with pytest.raises(Exception, match="upload an image"):
        client.predict(None, QUESTION, api_name="/answer")


def test_large_images_are_bounded_and_large_uploads_refused(server, files):
    from gradio_client import handle_file

    client = client_for(server)
    assert (files / "large.png").stat().st_size < 2_000_000
    text, annotated = client.predict(handle_file(str(files / "large.png")), QUESTION, api_name="/answer")
    with Image.open(annotated) as image:
        assert image.size == (WORK_SIDE, WORK_SIDE)  # the masks and the picture at the bounded size
    twelve = ", ".join(["body", "door", "wheel", "window"] * 3)
    annotated = client.predict(
        handle_file(str(files / "large.png")), QUESTION, ANSWER, twelve, api_name="/segment"
    )
    with Image.open(annotated) as image:
        assert image.size == (WORK_SIDE, WORK_SIDE)
    assert (files / "noise.png").stat().st_size > 2_500_000
    with pytest.raises(Exception, match="exceeds the maximum file size of 2097152 bytes"):
        client.predict(
            handle_file(str(files / "noise.png")), QUESTION, api_name="/answer"
        )  # refused by the client
    with open(files / "noise.png", "rb") as upload:  # and by the server, for any other client
        response = httpx.post(
            f"{server}gradio_api/upload", files={"files": ("noise.png", upload, "image/png")}
        )
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_browser_tab_compares_ground_truth_and_prediction(server):
    picture, text = client_for(server).predict(0, api_name="/browse")
    assert "IoU per part" in text and "correct" in text and "p = " in text
    with Image.open(picture) as image:
        assert image.width > 3 * image.height / 2  # three panels side by side


def test_temporary_files_go_when_the_app_stops_and_a_missing_dataset_warns(files, tmp_path):
    from gradio_client import handle_file

    temp, missing = tmp_path / "gradio-temp", tmp_path / "no-partonomy"
    temp.mkdir()
    with running_app(
        files / "plum-tiny", missing, tmp_path / "server.log", env={"GRADIO_TEMP_DIR": str(temp)}
    ) as url:
        client = client_for(url)
        client.predict(handle_file(str(files / "car.png")), QUESTION, api_name="/answer")
        written = [p for p in temp.rglob("*") if p.is_file()]
        assert any(p.suffix == ".png" for p in written)  # the upload, the examples, the picture
        with pytest.raises(Exception, match="no-partonomy"):
            client.predict(0, api_name="/browse")
    assert [p for p in temp.rglob("*")] == []  # everything the app wrote, gone
    log = (tmp_path / "server.log").read_text()
    assert f"warning: The PARTONOMY tab is off: no dataset folder '{missing}'" in log
    assert "python -m partonomy_dataset build --config toy" in log


@pytest.mark.skipif(
    not chromium_available(), reason="Debian's chromium and chromium-driver are not installed"
)
def test_ask_and_highlight_in_a_real_browser(server, files, tmp_path):
    with chromium(tmp_path / "chromium-profile") as driver:
        ask_round(driver, server, tmp_path / "app_ask.png", image_path=files / "car.png")
        assert "answer" in driver.page_source
        highlight_round(driver, server, tmp_path / "app_highlight.png", image_path=files / "car.png")
        assert "door" in driver.page_source
    for name in ("app_ask.png", "app_highlight.png"):
        with Image.open(tmp_path / name) as shot:
            assert shot.size[0] >= 1000
