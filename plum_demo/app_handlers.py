"""What the app (`app.py`) does, apart from its layout: reading uploads within bounds, the model calls (all through the
`part-segmentation` pipeline, `modeling_plum.pipeline_plum`, with SAM embeddings kept in one `ImageEmbeddingCache`),
choice scores as probabilities, and the pictures and texts the page shows.

Errors a user can cause raise `UserError` (the app shows its message); anything else is a bug and stays an error.
Nothing here imports gradio, so that the app can point gradio's temporary folder at its own before gradio loads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modeling_plum.pipeline_plum import PlumInputError, PlumPartSegmentationPipeline
from modeling_plum.processing_plum import MIN_IMAGE_SIDE
from partonomy_dataset import masks as rle
from partonomy_dataset import templates
from plum_training import evaluation
from plum_training.embedding_cache import ImageEmbeddingCache
from plum_training.scoring import PlumChoiceScorer

from .drawing import draw_masks, hex_colour, iou
from .overlays import overlay as question_overlay

WORK_SIDE = (
    1024  # longest side the model sees: larger images are downscaled first, so masks are at most this size
)
DISPLAY_SIDE = 384  # smaller images are shown enlarged (by a whole factor) to about this size
MAX_MEGAPIXELS = 70  # larger uploads are refused before their pixels are decoded (8000 x 8000 is 64)
MAX_TEXT = 1000  # characters of a question or an answer
MAX_CHOICES = 10
MAX_SPANS = 16  # words segmented in one request
EMBEDDING_CACHE = 16  # images whose SAM embeddings are kept
MAX_NEW_TOKENS = 64


class UserError(Exception):
    """Something the user can fix (no image, a word not in the answer ...); the app shows it as a message. Any other
    exception is a bug: it is logged and stays an error."""


# ---------------------------------------------------------------------------------------------------- inputs


def open_image(value) -> Image.Image:
    """An RGB image from an upload (a file path, as the app's image inputs give), a PIL image or an array: larger than
    `MAX_MEGAPIXELS` refused before decoding, EXIF rotation applied, longest side brought down to `WORK_SIDE`."""
    if value is None:
        raise UserError("upload an image (or pick an example) first")
    if isinstance(value, (str, Path)):
        try:
            image = Image.open(value)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
            raise UserError(f"cannot read the upload as an image ({error})") from None
    else:
        image = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))
    width, height = image.size
    if width * height > MAX_MEGAPIXELS * 1_000_000:
        raise UserError(f"the image is {width}x{height} px; the demo takes up to {MAX_MEGAPIXELS} megapixels")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise UserError(f"the image is {width}x{height} px; PLUM needs at least {MIN_IMAGE_SIDE} px per side")
    try:
        image.draft("RGB", (WORK_SIDE, WORK_SIDE))  # JPEG decodes at a reduced size directly
        image = ImageOps.exif_transpose(image)
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.LANCZOS)
        return image.convert("RGB")
    except OSError as error:  # a truncated or corrupt file fails when its pixels are read
        raise UserError(f"cannot read the upload as an image ({error})") from None


def text_input(value, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise UserError(f"write the {what}")
    if len(text) > MAX_TEXT:
        raise UserError(f"the {what} is {len(text)} characters; the demo takes up to {MAX_TEXT}")
    return text


def typed_names(text: str) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def selected_spans(answer: str, selection) -> list[tuple[int, int]]:
    """Character spans of the pieces a user labelled in a `gr.HighlightedText` over `answer`."""
    spans, cursor = [], 0
    for piece in selection or []:
        text, label = (piece["token"], piece["class_or_confidence"]) if isinstance(piece, dict) else piece
        start = answer.find(text, cursor)
        if label and text.strip() and start >= 0:
            stripped = len(text) - len(text.lstrip())
            spans.append((start + stripped, start + len(text.rstrip())))
        cursor = start + len(text) if start >= 0 else cursor + len(text)
    return spans


def question_for(question_type: str, obj: str, other: str) -> str:
    """One of PARTONOMY's five question types, filled in for a named object."""
    obj, other = (obj or "").strip() or "object", (other or "").strip()
    if question_type in ("intersection", "difference") and not other:
        raise UserError(f"a {question_type} question compares with another object: name it")
    named = templates.UNNAMED_OBJECT if question_type == "part2whole" else obj
    return templates.parts_question(question_type, named, other or None)


# ---------------------------------------------------------------------------------------------------- choices


def choice_probabilities(scores) -> np.ndarray:
    """The choice scores (mean token log-likelihoods) as probabilities over the choices (a softmax): the pick, the
    highest score, gets the longest bar."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def _answer_items(choice: str) -> tuple[list[str], list[str]]:
    """An answer's pieces: what comes before its part list (up to the last ": ") and each listed part; an answer
    without a part list is one piece."""
    head, colon, tail = choice.strip().rpartition(": ")
    if not colon:
        return [], [choice.strip().rstrip(". ")]
    parts = [
        part.strip() for part in re.split(r",\s*(?:and\s+)?|\s+and\s+", tail.rstrip(". ")) if part.strip()
    ]
    return [head], parts


def choice_labels(choices: list[str], width: int = 30) -> list[str]:
    """Short, distinct labels for answer choices: numbered, with only what differs between them (the listed parts that
    not every choice names; a choice that names only those every choice names shows its list)."""
    items = [_answer_items(choice) for choice in choices]
    common = set.intersection(*(set(head + parts) for head, parts in items)) if len(items) > 1 else set()
    heads = {head[0] for head, _ in items if head}
    if len(heads) == 1 and len(items) > 1:  # every part list opens the same way
        common |= heads
    labels = []
    for k, (head, parts) in enumerate(items):
        rest = ", ".join([i for i in head + parts if i not in common] or parts)
        labels.append(f"{k + 1}. {rest if len(rest) <= width else rest[: width - 1] + '…'}")
    return labels


def choice_table(choices: list[str], scores) -> dict:
    """The bar chart's columns: label, probability and whether it is the model's pick."""
    probabilities = choice_probabilities(scores)
    picked = int(np.argmax(probabilities))
    return {
        "choice": choice_labels(choices),
        "probability": [float(p) for p in probabilities],
        "pick": ["model's pick" if k == picked else "other choice" for k in range(len(choices))],
    }


# ---------------------------------------------------------------------------------------------------- pictures


def highlighted(result: dict) -> list[tuple[str, str | None]]:
    """The answer as (text, label) pieces for `gr.HighlightedText`; a span's label is its number and text, so that
    repeated words keep their own colours."""
    text, pieces, cursor = result["text"], [], 0
    for k, span in sorted(enumerate(result["spans"]), key=lambda ks: ks[1]["start"]):
        if span["start"] > cursor:
            pieces.append((text[cursor : span["start"]], None))
        pieces.append((text[span["start"] : span["end"]], span_name(k, span)))
        cursor = max(cursor, span["end"])
    if cursor < len(text):
        pieces.append((text[cursor:], None))
    return pieces


def span_name(k: int, span: dict) -> str:
    return f"{k + 1} {span['label']}"


def colour_map(result: dict) -> dict[str, str]:
    """Each span's colour: the colour its mask is drawn in (`drawing.colour(k)`)."""
    return {span_name(k, span): hex_colour(k) for k, span in enumerate(result["spans"])}


def annotated(image: Image.Image, result: dict) -> Image.Image:
    """The masks drawn on the (bounded) image the model saw, enlarged by a whole factor when it is small."""
    scale = max(1, DISPLAY_SIDE // max(image.size))
    return draw_masks(image, result["masks"], [s["label"] for s in result["spans"]], scale=scale)


# ---------------------------------------------------------------------------------------------------- the model


class DemoModel:
    """The app's model calls: the part-segmentation pipeline (answer, tag a given answer, highlight-to-segment), the
    benchmark's choice scorer and the evaluation library's prediction for the PARTONOMY tab, sharing one SAM
    embedding cache."""

    def __init__(self, model, processor, rows: list[dict] | None = None, dataset_note: str | None = None):
        self.model, self.processor = model.eval(), processor
        self.cache = ImageEmbeddingCache(self.model, capacity=EMBEDDING_CACHE)
        self.pipe = PlumPartSegmentationPipeline(
            model=self.model, processor=processor, device=self.model.device, embedding_cache=self.cache
        )
        self.scorer = PlumChoiceScorer(self.model, processor)
        self.rows, self.dataset_note = rows or [], dataset_note

    def segment(self, image: Image.Image, question: str, answer: str | None = None, spans=None) -> dict:
        """One pipeline call; the pipeline's input errors (a word not in the answer, a text too long) are the user's."""
        if spans is not None and len(spans) > MAX_SPANS:
            raise UserError(f"{len(spans)} spans; the demo segments up to {MAX_SPANS} at a time")
        try:
            return self.pipe(image, question, answer=answer, spans=spans, max_new_tokens=MAX_NEW_TOKENS)
        except PlumInputError as error:
            raise UserError(str(error)) from None

    def answer(self, image, question) -> tuple[dict, Image.Image]:
        image = open_image(image)
        result = self.segment(image, text_input(question, "question"))
        return result, annotated(image, result)

    def ask(self, image, question, choices_text) -> tuple[dict, Image.Image, dict]:
        """PLUM's answer, or with answer choices the benchmark's pick (highest mean token log-likelihood), tagged and
        segmented; and the choices' probabilities."""
        image, question = open_image(image), text_input(question, "question")
        choices = [text_input(c, "answer choice") for c in (choices_text or "").splitlines() if c.strip()]
        if len(choices) > MAX_CHOICES:
            raise UserError(f"{len(choices)} answer choices; the demo scores up to {MAX_CHOICES}")
        table = {"choice": [], "probability": [], "pick": []}
        if choices:
            try:
                scores = self.scorer(image, [(question, None)], choices).tolist()
            except ValueError as error:  # the processor's text budget
                raise UserError(str(error)) from None
            table = choice_table(choices, scores)
            result = self.segment(image, question, answer=choices[int(np.argmax(scores))])
        else:
            result = self.segment(image, question)
        return result, annotated(image, result), table

    def highlight(self, image, question, answer, spans) -> tuple[dict, Image.Image]:
        """Highlight-to-segment: `spans` are words of the answer or (start, end) character spans of it."""
        image, answer = open_image(image), text_input(answer, "answer whose words you want to segment")
        if not spans:
            raise UserError("select words of the answer, or type them (comma-separated)")
        result = self.segment(image, text_input(question, "question"), answer=answer, spans=spans)
        return result, annotated(image, result)

    def browse(self, index) -> tuple[Image.Image, str]:
        """A PARTONOMY question: image, ground truth and PLUM's masks side by side, choices with probabilities."""
        if not self.rows:
            raise UserError(self.dataset_note or "no PARTONOMY questions were loaded")
        row = self.rows[int(index or 0) % len(self.rows)]
        records, skipped = evaluation.predict(
            self.model, self.processor, [row], progress=False, cache=self.cache
        )
        if skipped:
            raise UserError(f"question {row['id']} cannot be shown: {skipped[0][1]}")
        record = records[0]
        scale = max(1, DISPLAY_SIDE // max(row["image"].size))
        return question_overlay(row, record, scale=scale), browse_text(row, record)


def browse_text(row: dict, record: dict) -> str:
    lines = [
        f"**{row['question_type']}** · {row['object']} · `{row['id']}`",
        "",
        f"**Q:** {row['question']}",
        "",
    ]
    probabilities = choice_probabilities(record["scores"])
    for i, (choice, p) in enumerate(zip(row["answer_choices"], probabilities)):
        marks = (" **(correct)**" if i == row["correct_index"] else "") + (
            " ⬅ PLUM" if i == record["chosen"] else ""
        )
        lines.append(f"{i + 1}. {choice} (p = {p:.2f}){marks}")
    truth = [rle.decode(m) for m in row["masks"]]
    predicted = [rle.decode(m) for m in record["masks"]]
    ious = ", ".join(f"{p} {iou(m, t):.2f}" for p, m, t in zip(row["parts"], predicted, truth))
    return "\n".join(lines + ["", f"**IoU per part:** {ious}"])


# ---------------------------------------------------------------------------------------------------- examples


def example(image_path, question_type, obj, other, question, choices, answer, parts) -> dict:
    """What clicking an example fills in: in "Ask" the image, the object and the question (and its answer choices),
    in "Highlight" the image, the question, an answer and its part names."""
    return {
        "image": str(image_path),
        "question_type": question_type,
        "object": obj,
        "other": other or "",
        "question": question,
        "choices": "\n".join(choices),
        "answer": answer,
        "parts": ", ".join(parts),
    }


def dataset_examples(rows: list[dict], folder: Path, count: int = 6) -> list[dict]:
    """One example per image of the first `count` images, from its identification question (else its first): the
    object, question, answer choices and correct answer the dataset gives."""
    chosen: dict[str, dict] = {}
    for row in rows:
        earlier = chosen.get(row["image_id"])
        if earlier is None and len(chosen) < count:
            chosen[row["image_id"]] = row
        elif earlier is not None and earlier["question_type"] != "identification":
            if row["question_type"] == "identification":
                chosen[row["image_id"]] = row
    examples = []
    for k, row in enumerate(chosen.values()):
        path = Path(folder) / f"example_{k}.png"
        row["image"].convert("RGB").save(path)
        correct = row["answer_choices"][row["correct_index"]]
        examples.append(
            example(
                path,
                row["question_type"],
                row["object"],
                row.get("comparison_object"),
                row["question"],
                row["answer_choices"],
                correct,
                row["answer_parts"][row["correct_index"]],
            )
        )
    return examples


def toy_examples(folder: Path, count: int = 6) -> list[dict]:
    """Without a dataset folder: toy images drawn here (`partonomy_dataset`'s toy generator), each with its object, the
    identification question and the answer that names the parts drawn."""
    from partonomy_dataset.sources import toy

    examples = []
    for k in range(count):
        obj, pixels, part_masks = toy.draw(k, seed=7)
        path = Path(folder) / f"example_{k}.png"
        Image.fromarray(pixels).save(path)
        parts = list(part_masks)
        question = templates.parts_question("identification", obj)
        answer = templates.parts_answer("identification", obj, parts)
        examples.append(example(path, "identification", obj, "", question, [], answer, parts))
    return examples
