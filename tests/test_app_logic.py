"""The model side of app.py in-process (no server): every model call through the part-segmentation pipeline with one
SAM embedding cache, tagged spans never outside the answer, uploads bounded before the model sees them, choice scores
as probabilities with labels that differ, examples that fill in the object and the question, user errors as messages
and bugs as errors, the concurrency groups of the page's events, and the command line's errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import app
from modeling_plum.processing_plum import TAG_B, TAG_I, TAG_O
from plum_demo.app_handlers import (
    MAX_MEGAPIXELS,
    WORK_SIDE,
    DemoModel,
    UserError,
    choice_labels,
    choice_probabilities,
    colour_map,
    dataset_examples,
    highlighted,
    open_image,
    question_for,
    selected_spans,
    toy_examples,
)
from plum_demo.drawing import hex_colour

QUESTION = "What visible parts does the car in the image have?"
ANSWER = "The car in the image has the following visible parts: body, door, wheel, and window."


@pytest.fixture(scope="module")
def demo():
    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    return DemoModel(*build_tiny())


def noise(height, width, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def test_one_embedding_per_image_through_the_pipeline(demo):
    image, other = noise(60, 80), noise(60, 80, seed=1)
    before = demo.cache.encoder_calls
    first, _ = demo.highlight(image, QUESTION, ANSWER, ["wheel", "door"])  # any order
    again, _ = demo.highlight(
        image.copy(), QUESTION, ANSWER, [(ANSWER.index("window"), ANSWER.index("window") + 6)]
    )
    demo.ask(image, QUESTION, "")
    assert demo.cache.encoder_calls == before + 1  # one SAM encoder pass for three calls on one image
    demo.highlight(other, QUESTION, ANSWER, ["door"])
    assert demo.cache.encoder_calls == before + 2
    assert [m.shape for m in first["masks"]] == [(60, 80), (60, 80)]
    assert [s["label"] for s in first["spans"]] == ["wheel", "door"] and again["spans"][0][
        "label"
    ] == "window"
    pieces = highlighted(first)
    assert "".join(text for text, _ in pieces) == ANSWER
    assert [label for _, label in pieces if label] == [
        "2 door",
        "1 wheel",
    ]  # in text order, numbered as segmented
    assert colour_map(first) == {"1 wheel": hex_colour(0), "2 door": hex_colour(1)}  # the masks' colours


@pytest.mark.parametrize(
    "where", ["everywhere", "end of text", "question only", "inside and on </s>", "all inside, I chain"]
)
def test_tagging_a_given_answer_never_segments_outside_it(demo, monkeypatch, where):
    """Issue 20: the tagger put a span on `</s>` and the app trimmed past the answer's end. Whatever the tags, only
    spans inside the answer's characters are formed, kept and segmented (one mask each)."""
    model, tokenizer = demo.model, demo.processor.tokenizer
    encoded = demo.processor.encode_conversation([(QUESTION, ANSWER)])
    start = encoded["text"].rfind(" " + ANSWER) + 1
    inside = [e > s and e > start and s < start + len(ANSWER) for s, e in encoded["offsets"]]
    eos = [i == tokenizer.eos_token_id for i in encoded["input_ids"]]

    def tags(input_ids, span_logits):
        n = input_ids.shape[1]
        chosen = {
            "everywhere": [TAG_B] * n,
            "end of text": [TAG_O] * (n - 2) + [TAG_B, TAG_I],
            "question only": [TAG_B if not ok else TAG_O for ok in inside],
            "inside and on </s>": [TAG_B if (ok or e) else TAG_O for ok, e in zip(inside, eos)],
            "all inside, I chain": [TAG_I if ok else TAG_O for ok in inside],
        }[where]
        return torch.tensor([chosen])

    monkeypatch.setattr(model, "_predicted_tags", tags)
    image = noise(40, 50)
    results = [demo.segment(image, QUESTION, answer=ANSWER)]
    if where in ("everywhere", "end of text"):  # tags that do not depend on the answer's length
        results.append(
            demo.ask(image, QUESTION, f"{ANSWER}\nIt is a car.")[0]
        )  # the failing case: Ask with choices
    for result in results:
        spans = result["spans"]
        assert len(result["masks"]) == len(spans)
        for span in spans:
            assert 0 <= span["start"] < span["end"] <= len(result["text"])
            assert result["text"][span["start"] : span["end"]] == span["label"] == span["label"].strip(" ,.")
    labels = [span["label"] for span in results[0]["spans"]]
    if where == "question only":
        assert labels == []
    if where == "end of text":  # the last token of the answer (with or without its full stop) and </s>
        assert labels in ([], ["window"])


def test_large_uploads_are_bounded_before_the_model(demo, monkeypatch, tmp_path):
    """An 8000 x 8000 upload: the model sees it at `WORK_SIDE`, so every mask computed (logits included) is at most
    WORK_SIDE per side, and so is the picture shown; larger than `MAX_MEGAPIXELS` is refused before decoding."""
    pixels = np.full((8000, 8000, 3), 40, np.uint8)
    pixels[1000:5000, 2000:7000] = (200, 80, 40)
    path = tmp_path / "large.png"
    Image.fromarray(pixels).save(path)
    del pixels
    computed = []
    decode = demo.model.decode_masks_batch

    def spy(*args, **kwargs):
        logits, low = decode(*args, **kwargs)
        computed.extend(tuple(m.shape[-2:]) for m in logits)
        return logits, low

    monkeypatch.setattr(demo.model, "decode_masks_batch", spy)
    names = "body, door, wheel, window, " * 3
    result, picture = demo.highlight(str(path), QUESTION, ANSWER, [n for n in names.split(", ") if n])
    assert len(result["masks"]) == 12 and computed == [(WORK_SIDE, WORK_SIDE)]
    assert all(m.shape == (WORK_SIDE, WORK_SIDE) for m in result["masks"])
    assert picture.size == (WORK_SIDE, WORK_SIDE)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (4000, 1000)).save(wide)
    assert open_image(str(wide)).size == (WORK_SIDE, WORK_SIDE // 4)
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(huge)  # 81 megapixels, a few KB on disk
    opened = []
    monkeypatch.setattr(Image.Image, "load", lambda self: opened.append(self) or None)
    with pytest.raises(UserError, match=f"9000x9000 px; the demo takes up to {MAX_MEGAPIXELS} megapixels"):
        open_image(str(huge))
    assert not opened  # refused from its header


def test_choice_scores_are_probabilities_with_labels_that_differ():
    scores = [-2.0, -0.5, -1.0, -3.0]
    probabilities = choice_probabilities(scores)
    assert probabilities.sum() == pytest.approx(1.0) and np.argmax(probabilities) == 1
    assert list(np.argsort(probabilities)) == list(np.argsort(scores))  # the pick has the longest bar
    prefix = "The car in the image has the following visible parts: "
    choices = [
        prefix + "body, cab, and mirror.",
        prefix + "body, cargo box, mirror, and window.",
        prefix + "mirror and window.",
        prefix + "license plate, mirror, and window.",
        prefix + "mirror.",
    ]
    assert choice_labels(choices) == [
        "1. body, cab",
        "2. body, cargo box, window",
        "3. window",
        "4. license plate, window",
        "5. mirror",  # what every choice names
    ]
    assert choice_labels(["It is a car.", "It is a bus."]) == ["1. It is a car", "2. It is a bus"]
    assert choice_labels(["x " * 40]) == ["1. " + "x " * 14 + "x…"]
    assert choice_labels(choices[:2] + ["It is a car."]) == [
        "1. body, cab, mirror",
        "2. body, cargo box, mirror, wind…",
        "3. It is a car",
    ]


def test_examples_fill_in_the_object_and_the_question(tmp_path):
    rows = [
        {
            "image_id": f"img{k}",
            "image": noise(32, 32, seed=k),
            "question_type": question_type,
            "object": obj,
            "comparison_object": None,
            "question": question_for(question_type, obj, ""),
            "answer_choices": [
                f"The {obj} in the image has the following visible parts: body.",
                "It is a cat.",
            ],
            "answer_parts": [["body"], []],
            "correct_index": 0,
        }
        for k, (question_type, obj) in enumerate(
            [("part2whole", "lighthouse"), ("identification", "car"), ("identification", "tree")]
        )
    ]
    rows.insert(
        1,
        {
            **rows[0],
            "question_type": "identification",
            "question": question_for("identification", "lighthouse", ""),
        },
    )
    examples = dataset_examples(rows, tmp_path)
    assert [(e["object"], e["question_type"]) for e in examples] == [
        ("lighthouse", "identification"),
        ("car", "identification"),
        ("tree", "identification"),
    ]
    assert examples[0]["question"] == "What visible parts does the lighthouse in the image have?"
    assert examples[0]["answer"].endswith("parts: body.") and examples[0]["parts"] == "body"
    assert all(Image.open(e["image"]).size == (32, 32) for e in examples)
    (tmp_path / "toy").mkdir()
    drawn = toy_examples(tmp_path / "toy", count=3)
    for e in drawn:
        assert e["object"] in e["question"] and e["object"] in e["answer"]
        assert all(part in e["answer"] for part in e["parts"].split(", "))
        assert Image.open(e["image"]).size[0] >= 64


def test_user_errors_are_messages_and_bugs_stay_errors(demo, monkeypatch):
    import gradio as gr

    image = noise(40, 40)
    with pytest.raises(UserError, match="'wing' is not in the answer"):
        demo.highlight(image, QUESTION, ANSWER, ["door", "wing"])
    with pytest.raises(UserError, match="upload an image"):
        demo.ask(None, QUESTION, "")
    with pytest.raises(UserError, match="PLUM needs at least 16"):
        demo.highlight(Image.new("RGB", (8, 8)), QUESTION, ANSWER, [(0, 3)])
    with pytest.raises(UserError, match="write the question"):
        demo.answer(image, "  ")
    with pytest.raises(UserError, match="compares with another object"):
        question_for("intersection", "car", "")
    assert question_for("difference", "car", "bus") == (
        "What visible parts does the car in the image have which a bus does not have?"
    )
    assert question_for("part2whole", "car", "") == "What visible parts does the object in the image have?"
    assert selected_spans(ANSWER, [{"token": ANSWER[:59], "class_or_confidence": None}, (" door", "x")]) == [
        (60, 64)
    ]
    wrapped = app.user_messages(lambda: demo.highlight(image, QUESTION, ANSWER, ["wing"]))
    with pytest.raises(gr.Error, match="'wing' is not in the answer"):
        wrapped()

    def bug(*args, **kwargs):
        raise ValueError("an internal bug, not the user's")

    monkeypatch.setattr(demo.model, "decode_masks_batch", bug)
    with pytest.raises(ValueError, match="internal bug"):  # not a UserError, not a gr.Error
        app.user_messages(lambda: demo.highlight(image, QUESTION, ANSWER, ["door"]))()


def test_model_requests_share_one_group_and_light_ones_never_wait(demo, tmp_path):
    page = app.build_app(demo, toy_examples(tmp_path, count=2), model_concurrency=2)
    by_name = {fn.name: fn for fn in page.fns.values()}
    for name in ("ask", "answer_api", "segment_selection", "segment_api", "browse"):
        assert (by_name[name].concurrency_id, by_name[name].concurrency_limit) == (app.MODEL_EVENTS, 2), name
    for name in ("question_for", "<lambda>"):
        assert by_name[name].concurrency_limit is None and by_name[name].concurrency_id != app.MODEL_EVENTS
    assert {fn.api_name for fn in page.fns.values()} >= {"answer", "segment", "browse"}
    assert page.delete_cache == app.DELETE_CACHE


def test_command_line_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert app.main(["--model", str(tmp_path / "no-such-model")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no model folder" in error and "Repo id" not in error
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLUM_MODEL", raising=False)
    assert app.main([]) == 2
    assert capsys.readouterr().err.startswith("error: no model: pass --model")
    rows, note = app.load_rows(
        SimpleNamespace(dataset=str(tmp_path / "missing"), config="toy", split="validation")
    )
    warning = capsys.readouterr().err
    assert (
        rows == [] and str(tmp_path / "missing") in warning and "python -m partonomy_dataset build" in warning
    )
    assert warning.startswith("warning: ") and note in warning
    with pytest.raises(UserError, match="missing"):
        DemoModel.browse(SimpleNamespace(rows=[], dataset_note=note), 0)
