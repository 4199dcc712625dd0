"""The paper's Tables 2 (gIoU) and 3 (P / R / A / PA / OA) for any PLUM checkpoint on any PARTONOMY config.

    python eval_partonomy.py --model DIR_OR_HUB_ID --trust_remote_code --dataset FOLDER_OR_HUB_ID --config core \\
        --split test [--limit N] [--batch-size B] [--device cuda] [--dtype bfloat16 | --device-map auto] [--out DIR]
    python eval_partonomy.py --from-predictions DIR/predictions.jsonl --dataset FOLDER --config core --split test

Text: each question's answer is the choice with the highest mean token log-likelihood (shared-prefix scoring);
part2whole picks the parts, then the object in the conversation that follows; whole2part the object, then the
parts. Masks are teacher-forced: the correct answer's part names are segmented (with the feedback loop) and
paired with the ground-truth masks by name. Baseline rows from the same code: `random` (a uniform choice) and
`oracle-text` (always the correct choice; the model's masks). An interrupted run resumes from its dump, whose first
line names the model and its weights' fingerprint: resuming with another model is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from metrics.giou import compute_giou
from metrics.partonomy_text import compute_partonomy_text
from partonomy_dataset import masks as rle
from partonomy_dataset.templates import PART_WHOLE_TYPES, QUESTION_TYPES
from plum_training.data import Collator
from plum_training.loading import DTYPES, default_device, load_model_and_processor, weights_fingerprint
from plum_training.scoring import predict_text

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
    model, processor = load_model_and_processor(model_path, trust, dtype, device_map)
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
    with dump.open("a", encoding="utf-8") as f, torch.no_grad():
        for start in tqdm(range(0, len(todo), batch_size), desc="evaluating", unit="batch"):
            chunk = todo[start : start + batch_size]
            for row, masks in zip(chunk, predict_masks(model, processor, chunk, embeddings)):
                record = {
                    "id": row["id"],
                    "question_type": row["question_type"],
                    **predict_text(model, processor, row),
                    **masks,
                }
                f.write(json.dumps(record) + "\n")
                f.flush()  # one complete line per question, so an interrupted run resumes cleanly
            if len(embeddings) > 4 * batch_size:  # questions of one image are adjacent: keep the cache small
                for key in list(embeddings)[: -2 * batch_size]:
                    del embeddings[key]


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
    """Per question type: P, R, A (and PA, OA for the part-whole types), in [0, 1]."""
    result = compute_partonomy_text(
        [picks[r["id"]]["chosen"] for r in rows],
        [r["correct_index"] for r in rows],
        answer_parts=[r["answer_parts"] for r in rows],
        question_types=[r["question_type"] for r in rows],
        object_predictions=[picks[r["id"]].get("object_chosen", -1) for r in rows],
        object_references=[r["object_correct_index"] for r in rows],
    )
    return result["per_type"]


def mask_table(rows, records) -> dict:
    """Per question type: micro / macro gIoU of teacher-forced masks paired with the ground truth by name."""
    by_type = defaultdict(list)
    for row in rows:
        by_type[row["question_type"]].append(row)
    table = {}
    for question_type, typed in by_type.items():
        result = compute_giou(
            [records[r["id"]]["masks"] for r in typed],
            [list(r["masks"]) for r in typed],
            prediction_labels=[records[r["id"]]["mask_parts"] for r in typed],
            reference_labels=[list(r["parts"]) for r in typed],
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
    types = [t for t in QUESTION_TYPES if any(t in r["text"] for r in results.values())]
    lines = ["**Table 2: segmentation (gIoU, %), teacher-forced**", ""]
    header = "| method | " + " | ".join(f"{t} micro | {t} macro" for t in types) + " |"
    lines += [header, "|---|" + "---:|" * (2 * len(types))]
    for name, result in results.items():
        if result.get("masks"):
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


def score(rows, records, model_name: str) -> dict:
    covered = [row for row in rows if row["id"] in records]
    if len(covered) < len(rows):
        logger.warning(
            "%d of %d questions have no prediction in the dump; scoring the rest",
            len(rows) - len(covered),
            len(rows),
        )
    return {
        model_name: {"text": text_table(covered, records), "masks": mask_table(covered, records)},
        "random": {
            "text": text_table(covered, random_picks(covered)),
            "masks": None,
            "expected": expected_random_text(covered),
        },
        "oracle-text": {
            "text": text_table(covered, oracle_picks(covered)),
            "masks": mask_table(covered, records),
        },
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
        run_model(
            args.model,
            rows,
            args.batch_size,
            dump,
            args.device,
            args.dtype,
            args.device_map,
            args.trust_remote_code,
        )
        name = args.name or Path(args.model).name
    else:
        dump = Path(args.from_predictions)
        if not dump.exists():
            raise FileNotFoundError(f"predictions file not found: {dump}")
        name = args.name or dump.parent.name or "model"
    results = score(rows, read_dump(dump)[1], name)
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
