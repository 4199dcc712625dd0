"""The model side of app.py in-process (no server): SAM embeddings cached per image across calls, highlight-to-segment
from typed words, PARTONOMY question templates, and the errors a user can cause."""

import numpy as np
import pytest
import torch
from PIL import Image

from app import PlumDemo, UserError, find_words, highlighted, question_for

ANSWER = "The car in the image has the following visible parts: body, door, wheel, and window."


@pytest.fixture(scope="module")
def demo():
    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    return PlumDemo(*build_tiny())


def test_sam_embeddings_are_cached_per_image(demo):
    image = Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8))
    other = Image.fromarray((np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8))
    question = "What visible parts does the car in the image have?"
    before = demo.encoder_calls
    first = demo.highlight(image, question, ANSWER, find_words(ANSWER, ["door", "wheel"]))
    again = demo.highlight(image.copy(), question, ANSWER, find_words(ANSWER, ["window"]))
    demo.answer(image, question)
    assert demo.encoder_calls == before + 1  # one SAM encoder pass for three calls on one image
    demo.highlight(other, question, ANSWER, find_words(ANSWER, ["door"]))
    assert demo.encoder_calls == before + 2
    assert [m.shape for m in first["masks"]] == [(60, 80), (60, 80)] and first["labels"] == ["door", "wheel"]
    assert again["labels"] == ["window"]
    pieces = highlighted(first)
    assert "".join(text for text, _ in pieces) == ANSWER
    assert [label for _, label in pieces if label] == ["door", "wheel"]


def test_user_errors_are_messages(demo):
    with pytest.raises(UserError, match="'wing' is not in the answer"):
        find_words(ANSWER, ["door", "wing"])
    assert find_words(ANSWER, ["door"]) == [(ANSWER.index("door"), ANSWER.index("door") + 4)]
    with pytest.raises(UserError, match="upload an image"):
        demo.answer(None, "What visible parts does the car in the image have?")
    with pytest.raises(UserError, match="PLUM needs at least 16"):
        demo.highlight(Image.new("RGB", (8, 8)), "q", ANSWER, [(0, 3)])
    with pytest.raises(UserError, match="compares with another object"):
        question_for("intersection", "car", "")
    assert question_for("difference", "car", "bus") == (
        "What visible parts does the car in the image have which a bus does not have?"
    )
    assert question_for("part2whole", "car", "") == "What visible parts does the object in the image have?"
