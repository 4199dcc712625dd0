"""The paper's Tables 2 (gIoU) and 3 (P / R / A / PA / OA) for any model on any PARTONOMY config.

    python eval_partonomy.py --model DIR_OR_HUB_ID --trust_remote_code --dataset FOLDER_OR_HUB_ID --config core \\
        --split test [--limit N] [--batch-size B] [--device cuda] [--dtype bfloat16 | --device-map auto] [--out DIR]
    python eval_partonomy.py --model llava-hf/llava-1.5-7b-hf --dataset ... # any image-text-to-text model: Table 3
    python eval_partonomy.py --from-predictions preds.jsonl --dataset FOLDER --config core --split test

A thin command line over `plum_training.evaluation`, the one evaluation path (the module says how each question is
scored). Rows: the model; the same model with the image withheld (`blind`: a flat grey image for CLIP and SAM, which
shows which columns need the image; `--no-blind` skips it); `random` (a uniform choice); `oracle-text` (the correct
choice, the model's masks); `whole-object` (every part predicted as the whole object). Predictions are written a line
at a time (`predictions.jsonl`, `predictions-blind.jsonl`), so an interrupted run resumes; their first line names the
model, its weights' fingerprint and dtype, and resuming with another model or dtype is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import datasets

from metrics.giou import EMPTY_POLICIES, MATCHINGS
from plum_training import evaluation
from plum_training.loading import DTYPES, default_device, load_any_model, row_name, weights_fingerprint
from plum_training.predictions import read_predictions
from plum_training.preflight import UsageError, check_dataset, check_device, check_model, check_new_output

logger = logging.getLogger("eval_partonomy")
DUMP, BLIND_DUMP = "predictions.jsonl", "predictions-blind.jsonl"
DUMP_FORMAT = "partonomy-predictions/1"


def _check_resumable(dump: Path, header: dict, rows) -> dict:
    """The records `dump` already holds for `header`'s model; another model or dtype is refused, naming both."""
    if not dump.exists():
        return {}
    previous, done, _ = read_predictions(dump, rows, repair=True)
    if previous is None:
        return done
    same_path = previous.get("model") == header["model"]
    if same_path and previous.get("dtype", header["dtype"]) != header["dtype"]:
        raise UsageError(
            f"{dump} holds predictions of {header['model']} in {previous['dtype']}; this run evaluates it in "
            f"{header['dtype']}: use another --out, or the same --dtype"
        )
    if not same_path or previous.get("fingerprint") != header["fingerprint"]:
        raise UsageError(
            f"{dump} holds predictions of {previous.get('model')} (weights {previous.get('fingerprint')}); this run "
            f"evaluates {header['model']} (weights {header['fingerprint']}): use another --out"
        )
    return done


def run_model(model, processor, header: dict, rows, dump: Path, batch_size: int, blind: bool) -> float:
    """Predicts the rows `dump` lacks, appending one line per question; returns questions per second."""
    done = _check_resumable(dump, header, rows)
    if not dump.exists() or dump.stat().st_size == 0:
        dump.write_text(json.dumps({"header": header}) + "\n", encoding="utf-8")
    todo = [row for row in rows if row["id"] not in done]
    if done:
        logger.info("resuming: %d questions already in %s, %d to go", len(done), dump, len(todo))
    started = time.perf_counter()
    with dump.open("a", encoding="utf-8") as f:

        def write(record):
            f.write(json.dumps(record) + "\n")
            f.flush()  # one complete line per question, so an interrupted run resumes cleanly

        _, skipped = evaluation.predict(
            model, processor, todo, blind=blind, batch_size=batch_size, on_record=write
        )
    seconds = time.perf_counter() - started
    if skipped:
        logger.warning("%d questions could not be predicted, e.g. %s", len(skipped), skipped[0])
    return len(todo) / seconds if todo and seconds > 0 else 0.0


def model_rows(args, rows, out: Path) -> tuple[dict, dict]:
    """Loads the model once and predicts (and the blind row); returns its results and the throughput."""
    model, processor = load_any_model(
        args.model, args.trust_remote_code, args.dtype, args.device_map, args.device or str(default_device())
    )
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    header = {"format": DUMP_FORMAT, "model": str(args.model), "fingerprint": weights_fingerprint(model)}
    header["dtype"] = dtype
    name = args.name or row_name(args.model)
    speed = run_model(model, processor, header, rows, out / DUMP, args.batch_size, blind=False)
    results = {name: _scored(rows, out / DUMP, args)}
    if not args.no_blind:
        run_model(
            model, processor, {**header, "blind": True}, rows, out / BLIND_DUMP, args.batch_size, blind=True
        )
        results[f"{name}, blind"] = _scored(rows, out / BLIND_DUMP, args)
    return results, {"questions_per_s": speed, "questions": len(rows), "dtype": dtype}


def _scored(rows, dump: Path, args) -> dict:
    _, records, skipped = read_predictions(dump, rows)
    result = evaluation.score(rows, list(records.values()), args.matching, args.empty_policy)
    return {**result, "skipped": len(skipped)}


def baseline_rows(rows, model_records: list[dict], args) -> dict:
    def scored(records):
        return {**evaluation.score(rows, records, args.matching, args.empty_policy), "baseline": True}

    random = scored(evaluation.random_records(rows))
    random["expected"] = evaluation.expected_random_text(rows)
    results = {"random": random}
    if any(evaluation.record_masks(r) is not None for r in model_records):
        results["oracle-text"] = scored(evaluation.oracle_records(rows, model_records))
    results["whole-object"] = scored(evaluation.whole_object_records(rows))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a PLUM folder or Hub id, any image-text-to-text model, or `tiny`")
    source.add_argument(
        "--from-predictions", metavar="DUMP", help="score a predictions file, no model needed"
    )
    parser.add_argument("--dataset", required=True, help="a folder built by partonomy_dataset, or a Hub id")
    parser.add_argument("--config", default="core")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="the first N questions of the split")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--out", default="eval_out", help="folder for predictions, results.json and tables.md"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results an earlier run left in --out"
    )
    parser.add_argument(
        "--name", help="the model's row name (default: its folder, with the checkpoint's step)"
    )
    parser.add_argument("--no-blind", action="store_true", help="skip the row with the image withheld")
    parser.add_argument(
        "--matching", default="paired", choices=MATCHINGS, help="mask pairing (paired: by name)"
    )
    parser.add_argument(
        "--empty-policy",
        default="one",
        choices=EMPTY_POLICIES,
        help="an empty prediction against an empty reference",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="default: the checkpoint's")
    parser.add_argument(
        "--device-map", help="`auto`: spread a model that fits no single device over all of them"
    )
    parser.add_argument(
        "--trust_remote_code",
        "--trust-remote-code",
        action="store_true",
        help="run the model code the checkpoint carries (PLUM is a trust_remote_code model); off by default",
    )
    args = parser.parse_args(argv)
    args.dataset = check_dataset(args.dataset, args.config)
    check_device(args.device)
    if args.model:
        args.model = check_model(args.model)
    elif not Path(args.from_predictions).is_file():
        raise UsageError(f"no predictions file {args.from_predictions}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    check_new_output(out / "results.json", args.overwrite)
    data = datasets.load_dataset(args.dataset, args.config, split=args.split)
    rows = list(data.select(range(min(args.limit, len(data))))) if args.limit else list(data)
    out.mkdir(parents=True, exist_ok=True)
    if args.model:
        results, throughput = model_rows(args, rows, out)
        print(f"{throughput['questions_per_s']:.2f} questions/s")
        (out / "throughput.json").write_text(json.dumps(throughput))
        records = list(read_predictions(out / DUMP, rows)[1].values())
    else:
        _, by_id, skipped = read_predictions(args.from_predictions, rows)
        records = list(by_id.values())
        name = args.name or row_name(args.from_predictions)
        results = {
            name: {
                **evaluation.score(rows, records, args.matching, args.empty_policy),
                "skipped": len(skipped),
            }
        }
    results.update(baseline_rows(rows, records, args))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    tables = evaluation.markdown_tables(results)
    (out / "tables.md").write_text(tables)
    print(tables)
    return results


if __name__ == "__main__":
    from plum_training.preflight import run_command

    sys.exit(run_command(main))
