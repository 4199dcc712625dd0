"""The paper's Tables 2 (gIoU) and 3 (P / R / A / PA / OA) for any model on any PARTONOMY config.

    python eval_partonomy.py --model DIR_OR_HUB_ID --trust_remote_code --dataset FOLDER_OR_HUB_ID --config core \\
        --split test [--limit N] [--batch-size B] [--device cuda] [--dtype bfloat16 | --device-map auto] [--out DIR]
    python eval_partonomy.py --model llava-hf/llava-1.5-7b-hf --dataset ... # any image-text-to-text model: Table 3
    python eval_partonomy.py --from-predictions preds.jsonl --dataset FOLDER --config core --split test

`--model` takes a PLUM checkpoint or any transformers image-text-to-text model with a processor and a chat template
(LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Idefics3 ...). Text: each question's answer is the choice with the highest mean
token log-likelihood given image + question, in the model's own conversation format, the shared prefix run once and
its KV cache reused by the five choices; part2whole picks the parts, then the object in the conversation that
follows; whole2part the object, then the parts. Masks (PLUM) are teacher-forced: the correct answer's part names are
segmented (with the feedback loop) and paired with the ground-truth masks by name; models that do not segment get
"–". `--from-predictions` scores a JSONL file of predictions made by any code (LISA, GLaMM, PixelLM ...; the format is
in the README). Baseline rows from the same code: `random` (a uniform choice) and `oracle-text` (always the correct
choice; the model's masks). An interrupted run resumes from its dump, whose first
line names the model and its weights' fingerprint: resuming with another model is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from metrics.giou import EMPTY_POLICIES, MATCHINGS, compute_giou
from metrics.partonomy_text import compute_partonomy_text
from partonomy_dataset import masks as rle
from partonomy_dataset.templates import PART_WHOLE_TYPES, QUESTION_TYPES
from plum_training.data import Collator
from plum_training.loading import (
    DTYPES,
    default_device,
    load_image_text_to_text,
    load_model_and_processor,
    model_kind,
    weights_fingerprint,
)
from plum_training.scoring import ChatTemplateChoiceScorer, PlumChoiceScorer, predict_text

logger = logging.getLogger("eval_partonomy")
DUMP = "predictions.jsonl"
DUMP_FORMAT = "partonomy-predictions/1"


# ---------------------------------------------------------------------------------------------------- predicting


@torch.no_grad()
def predict_masks(model, processor, rows, embeddings: dict) -> list[dict]:
    """Teacher-forced masks for a batch of rows; SAM embeddings are computed once per image (cached)."""
    batch = Collator(processor)(rows)
    batch.pop("gt_masks")
    missing = [i for i, row in enumerate(rows) if row["image_id"] not in embeddings]
    if missing:
        computed = model.get_image_embeddings(batch["sam_pixel_values"][missing])
        for i, embedding in zip(missing, computed):
            embeddings[rows[i]["image_id"]] = embedding
    image_embeddings = torch.stack([embeddings[row["image_id"]] for row in rows])
    batch.pop("sam_pixel_values")
    out = model(**batch, image_embeddings=image_embeddings, output_logits=False)
    results = []
    for row, spans, logits in zip(rows, out.spans, out.pred_masks):
        masks = (logits > model.config.mask_threshold).cpu().numpy()
        results.append(
            {
                "spans": [list(s) for s in spans],
                "mask_parts": list(row["parts"])[: len(masks)],
                "masks": [rle.encode(m) for m in masks],
            }
        )
    return results


def read_dump(path: Path, repair: bool = False) -> tuple[dict | None, dict]:
    """The header (or None for a file without one, e.g. written by another model's code) and the records by id.

    A torn last line (a run killed mid-write) is dropped with a warning; with `repair` the file is rewritten without
    it, so that the question is predicted again. A bad line elsewhere is an error naming the file and line."""
    header, records = None, {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning("%s: the last line is incomplete (a run stopped mid-write); dropping it", path)
                if repair:
                    tmp = path.with_name(f".{path.name}.tmp")
                    tmp.write_text("".join(kept + "\n" for kept in lines[:-1]), encoding="utf-8")
                    os.replace(tmp, path)
                break
            raise ValueError(f"{path}, line {number}: not valid JSON ({error})") from None
        if "header" in record:
            header = record["header"]
            continue
        if "id" not in record:
            raise ValueError(f"{path}, line {number}: a prediction needs an `id`")
        records[record["id"]] = record
    return header, records


def run_model(
    model_path, rows, batch_size: int, dump: Path, device=None, dtype="auto", device_map=None, trust=False
):
    """Predictions for `rows` appended to `dump` (resuming what it holds); returns (model kind, questions/s)."""
    kind = model_kind(model_path, trust)
    if kind == "plum":
        model, processor = load_model_and_processor(model_path, trust, dtype, device_map)
        scorer = PlumChoiceScorer(model, processor)
    else:
        model, processor = load_image_text_to_text(model_path, trust, dtype, device_map)
        scorer = ChatTemplateChoiceScorer(model, processor)
    if device_map is None:
        model = model.to(device or default_device())
    model.eval()
    header = {"format": DUMP_FORMAT, "model": str(model_path), "fingerprint": weights_fingerprint(model)}
    done = {}
    if dump.exists():
        previous, done = read_dump(dump, repair=True)
        if previous is not None and (previous["model"], previous["fingerprint"]) != (
            header["model"],
            header["fingerprint"],
        ):
            raise ValueError(
                f"{dump} holds predictions of {previous['model']} (weights {previous['fingerprint']}); this run "
                f"evaluates {header['model']} (weights {header['fingerprint']}): use another --out"
            )
    if not dump.exists() or dump.stat().st_size == 0:
        dump.write_text(json.dumps({"header": header}) + "\n", encoding="utf-8")
    todo = [row for row in rows if row["id"] not in done]
    if done:
        logger.info("resuming: %d questions already in %s, %d to go", len(done), dump, len(todo))
    embeddings: dict = {}
    started = time.perf_counter()
    with dump.open("a", encoding="utf-8") as f, torch.no_grad():
        for start in tqdm(range(0, len(todo), batch_size), desc="evaluating", unit="batch"):
            chunk = todo[start : start + batch_size]
            if kind == "plum":
                segmented = predict_masks(model, processor, chunk, embeddings)
            else:
                segmented = [{}] * len(chunk)  # this model does not segment
            for row, masks in zip(chunk, segmented):
                record = {
                    "id": row["id"],
                    "question_type": row["question_type"],
                    **predict_text(scorer, row),
                    **masks,
                }
                f.write(json.dumps(record) + "\n")
                f.flush()  # one complete line per question, so an interrupted run resumes cleanly
            if len(embeddings) > 4 * batch_size:  # questions of one image are adjacent: keep the cache small
                for key in list(embeddings)[: -2 * batch_size]:
                    del embeddings[key]
    seconds = time.perf_counter() - started
    speed = len(todo) / seconds if todo and seconds > 0 else 0.0
    logger.info("%d questions in %.1f s: %.2f questions/s", len(todo), seconds, speed)
    if getattr(scorer, "full_forwards", 0):
        logger.info(
            "%d choices scored by a full forward (their tokens did not extend the prompt's)",
            scorer.full_forwards,
        )
    return kind, speed


# ---------------------------------------------------------------------------------------------------- scoring


def random_picks(rows, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    picks = {}
    for row in rows:
        pick = {"chosen": int(rng.integers(len(row["answer_choices"])))}
        if row["question_type"] in PART_WHOLE_TYPES:
            pick["object_chosen"] = int(rng.integers(len(row["object_answer_choices"])))
        picks[row["id"]] = pick
    return picks


def oracle_picks(rows) -> dict:
    return {
        row["id"]: {"chosen": row["correct_index"], "object_chosen": row["object_correct_index"]}
        for row in rows
    }


def text_table(rows, picks) -> dict:
    """Per question type: P, R, A (and PA, OA for the part-whole types), in [0, 1]; `{}` without picks."""
    rows = [r for r in rows if picks.get(r["id"], {}).get("chosen") is not None]
    if not rows:
        return {}
    result = compute_partonomy_text(
        [picks[r["id"]]["chosen"] for r in rows],
        [r["correct_index"] for r in rows],
        answer_parts=[r["answer_parts"] for r in rows],
        question_types=[r["question_type"] for r in rows],
        object_predictions=[picks[r["id"]].get("object_chosen", -1) for r in rows],
        object_references=[r["object_correct_index"] for r in rows],
    )
    return result["per_type"]


def predicted_masks(record: dict) -> tuple[list[str], list] | None:
    """(part names, masks) of a prediction: `masks` as `{part name: RLE}` (the documented format) or as a list beside
    `mask_parts` (what this script writes); None for a record without masks."""
    masks = record.get("masks")
    if masks is None:
        return None
    if isinstance(masks, dict):
        return list(masks), list(masks.values())
    return list(record.get("mask_parts") or []), list(masks)


def mask_table(rows, records, matching: str = "paired", empty_policy: str = "one") -> dict | None:
    """Per question type: micro / macro gIoU of teacher-forced masks against the ground truth (paired by part name
    with `paired` matching); None when no record has masks."""
    by_type = defaultdict(list)
    for row in rows:
        if predicted_masks(records[row["id"]]) is not None:
            by_type[row["question_type"]].append(row)
    if not by_type:
        return None
    table = {}
    for question_type, typed in by_type.items():
        predicted = [predicted_masks(records[r["id"]]) for r in typed]
        result = compute_giou(
            [p[1] for p in predicted],
            [list(r["masks"]) for r in typed],
            prediction_labels=[p[0] for p in predicted],
            reference_labels=[list(r["parts"]) for r in typed],
            matching=matching,
            empty_policy=empty_policy,
        )
        table[question_type] = {"micro_giou": result["micro_giou"], "macro_giou": result["macro_giou"]}
    return table


def expected_random_text(rows) -> dict:
    """The analytic expectation of the random baseline: every choice equally likely."""
    from metrics.partonomy_text import part_precision_recall

    by_type = defaultdict(lambda: {"precision": [], "recall": [], "accuracy": []})
    for row in rows:
        truth = row["answer_parts"][row["correct_index"]]
        pr = [part_precision_recall(choice, truth) for choice in row["answer_parts"]]
        by_type[row["question_type"]]["precision"].append(np.mean([p for p, _ in pr]))
        by_type[row["question_type"]]["recall"].append(np.mean([r for _, r in pr]))
        by_type[row["question_type"]]["accuracy"].append(1 / len(row["answer_parts"]))
    return {t: {k: float(np.mean(v)) for k, v in d.items()} for t, d in by_type.items()}


def markdown_tables(results: dict) -> str:
    types = [
        t
        for t in QUESTION_TYPES
        if any(t in r["text"] or t in (r.get("masks") or {}) for r in results.values())
    ]
    lines = ["**Table 2: segmentation (gIoU, %), teacher-forced**", ""]
    header = "| method | " + " | ".join(f"{t} micro | {t} macro" for t in types) + " |"
    lines += [header, "|---|" + "---:|" * (2 * len(types))]
    for name, result in results.items():
        if name == "random":
            continue  # no masks to score
        if not result.get("masks"):
            lines.append(f"| {name} | " + " | ".join(["– | –"] * len(types)) + " |")  # does not segment
        else:
            cells = [
                f"{100 * result['masks'][t]['micro_giou']:.1f} | {100 * result['masks'][t]['macro_giou']:.1f}"
                if t in result["masks"]
                else "– | –"
                for t in types
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "**Table 3: text (%): P / R / A, and PA / OA for the part-whole types**", ""]
    columns = []
    for t in types:
        columns += [f"{t} P", f"{t} R"] + ([f"{t} PA", f"{t} OA"] if t in PART_WHOLE_TYPES else [f"{t} A"])
    lines += ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, result in results.items():
        cells = []
        for t in types:
            r = result["text"].get(t)
            if r is None:
                cells += ["–"] * (4 if t in PART_WHOLE_TYPES else 3)
                continue
            cells += [f"{100 * r['precision']:.1f}", f"{100 * r['recall']:.1f}", f"{100 * r['accuracy']:.1f}"]
            if t in PART_WHOLE_TYPES:
                cells.append(f"{100 * r['object_accuracy']:.1f}" if r["object_accuracy"] is not None else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score(rows, records, model_name: str, matching: str = "paired", empty_policy: str = "one") -> dict:
    covered = [row for row in rows if row["id"] in records]
    if len(covered) < len(rows):
        logger.warning(
            "%d of %d questions have no prediction in the dump; scoring the rest",
            len(rows) - len(covered),
            len(rows),
        )
    masks = mask_table(covered, records, matching, empty_policy)
    return {
        model_name: {"text": text_table(covered, records), "masks": masks},
        "random": {
            "text": text_table(covered, random_picks(covered)),
            "masks": None,
            "expected": expected_random_text(covered),
        },
        "oracle-text": {"text": text_table(covered, oracle_picks(covered)), "masks": masks},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a PLUM folder or Hub id (or `tiny`, the in-process preset)")
    source.add_argument(
        "--from-predictions", metavar="DUMP", help="re-score a predictions dump, no model needed"
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="core")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default="eval_out")
    parser.add_argument("--name", help="the model's row name in the tables (default: the model path)")
    parser.add_argument(
        "--matching",
        default="paired",
        choices=MATCHINGS,
        help="mask pairing (paired: by part name, what the paper's Table 2 uses)",
    )
    parser.add_argument(
        "--empty-policy",
        default="one",
        choices=EMPTY_POLICIES,
        help="an empty prediction against an empty reference: one (default), zero, or skip (the reference's values)",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="default: the checkpoint's")
    parser.add_argument(
        "--device-map", help="`auto`: spread a model that fits no single device over all of them (accelerate)"
    )
    parser.add_argument(
        "--trust_remote_code",
        "--trust-remote-code",
        action="store_true",
        help="run the model code the checkpoint carries (PLUM is a trust_remote_code model); off by default",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data = datasets.load_dataset(args.dataset, args.config, split=args.split)
    if args.limit:
        data = data.select(range(min(args.limit, len(data))))
    rows = list(data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model:
        dump = out / DUMP
        _, speed = run_model(
            args.model,
            rows,
            args.batch_size,
            dump,
            args.device,
            args.dtype,
            args.device_map,
            args.trust_remote_code,
        )
        print(f"{speed:.2f} questions/s")
        (out / "throughput.json").write_text(json.dumps({"questions_per_s": speed, "questions": len(rows)}))
        name = args.name or Path(args.model).name
    else:
        dump = Path(args.from_predictions)
        if not dump.exists():
            raise FileNotFoundError(f"predictions file not found: {dump}")
        name = args.name or dump.parent.name or "model"
    results = score(rows, read_dump(dump)[1], name, args.matching, args.empty_policy)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    tables = markdown_tables(results)
    (out / "tables.md").write_text(tables)
    print(tables)
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
