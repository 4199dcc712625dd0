"""The one evaluation path of the release: every accuracy and gIoU that training, `eval_partonomy.py`, `make demo`,
`make ablate` and the app report is computed here, the paper's way.

- `predict(model, processor, rows)`: per question, the choice scores and picks in the paper's turn order
  (`scoring.predict_text`: part2whole answers the parts, then the object after its own pick; whole2part the object
  first, from the image alone) and, for PLUM, the teacher-forced masks of the correct answer's part names (SAM
  embeddings once per image, `ImageEmbeddingCache`). `blind=True` withholds the image: both CLIP and SAM see a flat
  grey image of the same size, which shows which columns need the image. Records are the lines of a predictions file
  (`plum_training.predictions`).
- `score(rows, records)`: Table 2 (micro / macro gIoU through `metrics/giou`) and Table 3 (P / R / A, and PA / OA for
  the part-whole types, through `metrics/partonomy_text`) per question type, and micro / macro gIoU over all masks.
- Baselines from the same code: `random_records` (a uniform choice), `oracle_records` (the correct choice with a
  model's masks) and `whole_object_records` (every part predicted as the whole object).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from metrics.giou import compute_giou
from metrics.partonomy_text import compute_partonomy_text, part_precision_recall
from partonomy_dataset import masks as rle
from partonomy_dataset import templates
from partonomy_dataset.templates import PART_WHOLE_TYPES, QUESTION_TYPES

from .data import Collator
from .embedding_cache import ImageEmbeddingCache
from .scoring import ChatTemplateChoiceScorer, PlumChoiceScorer, predict_text

logger = logging.getLogger(__name__)
BLIND_GREY = (128, 128, 128)


def is_plum(model) -> bool:
    return getattr(model.config, "model_type", None) == "plum"


def blind_image(image: Image.Image) -> Image.Image:
    """The image withheld: flat grey, at the image's size (so that masks keep the ground truth's size)."""
    return Image.new("RGB", image.size, BLIND_GREY)


def without_images(rows: list[dict]) -> list[dict]:
    return [{**row, "image": blind_image(row["image"])} for row in rows]


# ---------------------------------------------------------------------------------------------------- predicting


@torch.no_grad()
def predict_masks(model, processor, rows: list[dict], cache: ImageEmbeddingCache) -> list[dict]:
    """Teacher-forced masks of a batch of rows: the correct answer's conversation, its part names segmented in order
    (with the feedback loop), masks as RLE beside the part each one segments."""
    batch = Collator(processor)(rows)
    batch.pop("gt_masks")
    embeddings = cache.embeddings([row["image"] for row in rows], batch.pop("sam_pixel_values"))
    out = model(**batch, image_embeddings=embeddings, output_logits=False)
    results = []
    for row, spans, logits in zip(rows, out.spans, out.pred_masks):
        if len(spans) != len(
            row["parts"]
        ):  # the processor tags exactly the row's parts: anything else is a bug
            raise RuntimeError(f"{row['id']}: {len(spans)} spans segmented for {len(row['parts'])} parts")
        masks = (logits > model.config.mask_threshold).cpu().numpy()
        results.append(
            {
                "spans": [list(s) for s in spans],
                "mask_parts": list(row["parts"]),
                "masks": [rle.encode(m) for m in masks],
            }
        )
    return results


def choice_scorer(model, processor):
    """PLUM's own scorer, or the chat-template scorer for any other image-text-to-text model."""
    return (PlumChoiceScorer if is_plum(model) else ChatTemplateChoiceScorer)(model, processor)


def _predict_batch(model, processor, rows, scorer, cache) -> list[dict]:
    segmented = predict_masks(model, processor, rows, cache) if is_plum(model) else [{}] * len(rows)
    return [
        {"id": row["id"], "question_type": row["question_type"], **predict_text(scorer, row), **masks}
        for row, masks in zip(rows, segmented)
    ]


def predict(
    model,
    processor,
    rows: list[dict],
    *,
    blind: bool = False,
    batch_size: int = 4,
    cache: ImageEmbeddingCache | None = None,
    on_record=None,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Prediction records for `rows` (see the module docstring) and the questions that could not be predicted, as
    (id, reason): a row whose image or text the processor refuses is counted and skipped, never the end of the run.
    `on_record(record)` is called as each record is made (a dump written a line at a time)."""
    was_training = model.training
    model.eval()
    scorer = choice_scorer(model, processor)
    cache = cache or ImageEmbeddingCache(model, capacity=max(16, 4 * batch_size))
    rows = without_images(rows) if blind else rows
    records, skipped = [], []
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for chunk in tqdm(chunks, desc="evaluating" + (" (blind)" if blind else ""), disable=not progress):
        try:
            made = _predict_batch(model, processor, chunk, scorer, cache)
        except ValueError:  # one row the processor refuses: find it, keep the others
            made = []
            for row in chunk:
                try:
                    made += _predict_batch(model, processor, [row], scorer, cache)
                except ValueError as error:
                    logger.warning("question %s skipped: %s", row["id"], error)
                    skipped.append((row["id"], str(error)))
        for record in made:
            records.append(record)
            if on_record is not None:
                on_record(record)
    model.train(was_training)
    return records, skipped


def one_row_per_image(rows) -> list[dict]:
    """The first row of each image, in order."""
    return list({row["image_id"]: row for row in reversed(list(rows))}.values())[::-1]


@torch.no_grad()
def object_naming(model, processor, rows, labels: list[str], blind: bool = False) -> dict:
    """Naming the object of each image among all `labels` ("It is a car.") by the benchmark's choice scoring: the
    accuracy, and the mean token negative log-likelihood of the correct answer. What stage 0 teaches, and what text
    retention measures after a fine-tune; one question per image."""
    was_training = model.training
    model.eval()
    scorer = choice_scorer(model, processor)
    choices = [templates.object_answer(label) for label in labels]
    rows = one_row_per_image(rows)
    right, nll = [], []
    for row in rows:
        image = blind_image(row["image"]) if blind else row["image"]
        scores = scorer(image, [(templates.OBJECT_QUESTION, None)], choices)
        truth = labels.index(row["object"])
        right.append(int(scores.argmax()) == truth)
        nll.append(-float(scores[truth]))
    model.train(was_training)
    return {"naming_accuracy": float(np.mean(right)), "answer_nll": float(np.mean(nll)), "images": len(rows)}


# ---------------------------------------------------------------------------------------------------- baselines


def random_records(rows, seed: int = 0) -> list[dict]:
    """A uniform choice for every question (and object question)."""
    rng = np.random.default_rng(seed)
    records = []
    for row in rows:
        record = {"id": row["id"], "chosen": int(rng.integers(len(row["answer_choices"])))}
        if row["question_type"] in PART_WHOLE_TYPES:
            record["object_chosen"] = int(rng.integers(len(row["object_answer_choices"])))
        records.append(record)
    return records


def oracle_records(rows, records) -> list[dict]:
    """The correct choice for every question, with the masks of `records` (the model's)."""
    by_id = {r["id"]: r for r in records}
    return [
        {
            **{k: v for k, v in by_id[row["id"]].items() if k in ("id", "masks", "mask_parts")},
            "chosen": row["correct_index"],
            "object_chosen": row["object_correct_index"],
        }
        for row in rows
        if row["id"] in by_id
    ]


def prior_records(train_rows, rows) -> list[dict]:
    """The best a model that never looks can do from part statistics: for a question naming its object, the choice
    whose parts are most probable for that object (each part's frequency among the training split's visible part sets
    of the object, parts assumed independent; a part never seen on it rules a choice out); for a question about "the
    object" (part2whole) the parts are scored under the most frequent object, and object questions pick that object.
    No image, no model: what the blind row is to be compared with."""
    frequency, images = defaultdict(lambda: defaultdict(int)), defaultdict(set)
    for row in train_rows:
        shows_all = row["question_type"] in ("identification", "part2whole", "whole2part")
        if shows_all and row["image_id"] not in images[row["object"]]:  # every visible part, once per image
            images[row["object"]].add(row["image_id"])
            for part in row["parts"]:
                frequency[row["object"]][part] += 1
    commonest = max(images, key=lambda o: len(images[o]))

    def log_prior(obj, parts):
        seen = len(images[obj]) or 1
        if any(frequency[obj][p] == 0 for p in parts):
            return -np.inf
        shares = {p: min(max(n / seen, 1e-3), 1 - 1e-3) for p, n in frequency[obj].items()}
        return sum(np.log(q if p in parts else 1 - q) for p, q in shares.items())

    records = []
    for row in rows:
        obj = commonest if row["question_type"] == "part2whole" else row["object"]
        record = {"id": row["id"], "chosen": int(np.argmax([log_prior(obj, c) for c in row["answer_parts"]]))}
        if row["question_type"] in PART_WHOLE_TYPES:
            choices = list(row["object_answer_choices"])
            guess = templates.object_answer(commonest)
            record["object_chosen"] = choices.index(guess) if guess in choices else 0
        records.append(record)
    return records


def whole_object_records(rows) -> list[dict]:
    """Every part predicted as the whole object (the union of its ground-truth parts); no text."""
    records = []
    for row in rows:
        whole = rle.union(list(row["masks"]))
        records.append(
            {"id": row["id"], "masks": [whole] * len(row["parts"]), "mask_parts": list(row["parts"])}
        )
    return records


def expected_random_text(rows) -> dict:
    """The analytic expectation of the random row: every choice equally likely."""
    by_type = defaultdict(lambda: {"precision": [], "recall": [], "accuracy": []})
    for row in rows:
        truth = row["answer_parts"][row["correct_index"]]
        pr = [part_precision_recall(choice, truth) for choice in row["answer_parts"]]
        by_type[row["question_type"]]["precision"].append(np.mean([p for p, _ in pr]))
        by_type[row["question_type"]]["recall"].append(np.mean([r for _, r in pr]))
        by_type[row["question_type"]]["accuracy"].append(1 / len(row["answer_parts"]))
    return {t: {k: float(np.mean(v)) for k, v in d.items()} for t, d in by_type.items()}


# ---------------------------------------------------------------------------------------------------- scoring


def _text_table(rows, by_id) -> dict:
    rows = [r for r in rows if by_id.get(r["id"], {}).get("chosen") is not None]
    if not rows:
        return {}
    result = compute_partonomy_text(
        [by_id[r["id"]]["chosen"] for r in rows],
        [r["correct_index"] for r in rows],
        answer_parts=[r["answer_parts"] for r in rows],
        question_types=[r["question_type"] for r in rows],
        object_predictions=[by_id[r["id"]].get("object_chosen", -1) for r in rows],
        object_references=[r["object_correct_index"] for r in rows],
    )
    return result["per_type"]


def record_masks(record: dict) -> tuple[list[str], list] | None:
    """(part names, RLE masks) of a record: `masks` as `{part: RLE}` (the documented format) or as a list beside
    `mask_parts` (what `predict` writes); None without masks."""
    masks = record.get("masks")
    if masks is None:
        return None
    if isinstance(masks, dict):
        return list(masks), list(masks.values())
    return list(record.get("mask_parts") or []), list(masks)


def _giou(rows, by_id, matching, empty_policy) -> dict:
    predicted = [record_masks(by_id[r["id"]]) for r in rows]
    result = compute_giou(
        [p[1] for p in predicted],
        [list(r["masks"]) for r in rows],
        prediction_labels=[p[0] for p in predicted],
        reference_labels=[list(r["parts"]) for r in rows],
        matching=matching,
        empty_policy=empty_policy,
    )
    return {"micro_giou": result["micro_giou"], "macro_giou": result["macro_giou"]}


def score(rows, records, matching: str = "paired", empty_policy: str = "one") -> dict:
    """Table 3 (`text`) and Table 2 (`masks`) per question type, gIoU over every mask (`overall`) and the number of
    questions scored. Rows without a record are left out (and counted); a table without records is empty / None."""
    by_id = {r["id"]: r for r in records}
    covered = [row for row in rows if row["id"] in by_id]
    if len(covered) < len(rows):
        logger.warning(
            "%d of %d questions have no prediction; scoring the rest", len(rows) - len(covered), len(rows)
        )
    with_masks = [row for row in covered if record_masks(by_id[row["id"]]) is not None]
    by_type = defaultdict(list)
    for row in with_masks:
        by_type[row["question_type"]].append(row)
    masks = {t: _giou(typed, by_id, matching, empty_policy) for t, typed in by_type.items()} or None
    return {
        "text": _text_table(covered, by_id),
        "masks": masks,
        "overall": _giou(with_masks, by_id, matching, empty_policy) if with_masks else None,
        "questions": len(covered),
    }


def evaluate(
    model, processor, rows, *, blind: bool = False, batch_size: int = 4, progress: bool = False
) -> dict:
    """`score(rows, predict(...))`: what in-training evaluation, the demo's rows and the ablation report."""
    records, skipped = predict(model, processor, rows, blind=blind, batch_size=batch_size, progress=progress)
    return {**score(rows, records), "skipped": len(skipped)}


def headline(result: dict) -> dict:
    """The flat numbers of a `score` result that training logs: micro / macro gIoU over every mask, and per question
    type the paper's A (PA and OA for the part-whole types)."""
    flat = dict(result.get("overall") or {})
    for question_type, text in (result.get("text") or {}).items():
        if question_type in PART_WHOLE_TYPES:
            flat[f"{question_type}_PA"] = text["accuracy"]
            flat[f"{question_type}_OA"] = text["object_accuracy"]
        else:
            flat[f"{question_type}_A"] = text["accuracy"]
    return flat


# ---------------------------------------------------------------------------------------------------- tables


def _type_columns(results: dict) -> list[str]:
    return [
        t
        for t in QUESTION_TYPES
        if any(t in (r.get("text") or {}) or t in (r.get("masks") or {}) for r in results.values())
    ]


def _mask_cells(result: dict, types) -> list[str]:
    masks = result.get("masks") or {}
    return [
        f"{100 * masks[t]['micro_giou']:.1f} | {100 * masks[t]['macro_giou']:.1f}" if t in masks else "– | –"
        for t in types
    ]


def _text_cells(result: dict, types) -> list[str]:
    cells = []
    for t in types:
        r = (result.get("text") or {}).get(t)
        if r is None:
            cells += ["–"] * (4 if t in PART_WHOLE_TYPES else 3)
            continue
        cells += [f"{100 * r['precision']:.1f}", f"{100 * r['recall']:.1f}", f"{100 * r['accuracy']:.1f}"]
        if t in PART_WHOLE_TYPES:
            cells.append(f"{100 * r['object_accuracy']:.1f}" if r["object_accuracy"] is not None else "–")
    return cells


def markdown_tables(results: dict) -> str:
    """The paper's Table 2 and Table 3, one row per entry of `results` (a `score` result each). Table 2 shows every
    model ("–" for one that does not segment) and the baselines with masks; Table 3 every row with picks."""
    types = _type_columns(results)
    lines = ["**Table 2: segmentation (gIoU, %), teacher-forced**", ""]
    lines += ["| method | " + " | ".join(f"{t} micro | {t} macro" for t in types) + " |"]
    lines += ["|---|" + "---:|" * (2 * len(types))]
    for name, result in results.items():
        if result.get("masks") or not result.get("baseline"):  # a model that does not segment shows "–"
            lines.append(f"| {name} | " + " | ".join(_mask_cells(result, types)) + " |")
    lines += ["", "**Table 3: text (%): P / R / A, and PA / OA for the part-whole types**", ""]
    columns = []
    for t in types:
        columns += [f"{t} P", f"{t} R"] + ([f"{t} PA", f"{t} OA"] if t in PART_WHOLE_TYPES else [f"{t} A"])
    lines += ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, result in results.items():
        if result.get("text"):
            lines.append(f"| {name} | " + " | ".join(_text_cells(result, types)) + " |")
    return "\n".join(lines) + "\n"
