"""eval_partonomy.py on toy with the tiny model: tables, baselines, dumps, resume and re-scoring."""

import json

import numpy as np
import pytest
import torch

import eval_partonomy
from modeling_plum.convert import build_tiny
from partonomy_dataset import __main__ as dataset_cli
from plum_training import evaluation


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    assert (
        dataset_cli.main(["build", "--config", "toy", "--out", str(root / "data"), "--toy-num-images", "34"])
        == 0
    )
    torch.manual_seed(0)
    model, processor = build_tiny()
    model.save_pretrained(root / "plum-tiny")
    processor.save_pretrained(root / "plum-tiny")
    return root


def evaluate(setup, out, *extra):
    return eval_partonomy.main(
        [
            "--dataset",
            str(setup / "data"),
            "--config",
            "toy",
            "--split",
            "validation",
            "--limit",
            "12",
            "--out",
            str(out),
            "--batch-size",
            "3",
            *extra,
        ]
    )


def read_records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "header" in lines[0]  # the model and its weights' fingerprint
    return lines[0]["header"], lines[1:]


def test_whole_script_on_toy(setup, tmp_path):
    results = evaluate(
        setup, tmp_path / "run", "--model", str(setup / "plum-tiny"), "--trust_remote_code", "--device", "cpu"
    )
    assert set(results) == {"plum-tiny", "plum-tiny, blind", "random", "oracle-text", "whole-object"}
    model = results["plum-tiny"]
    blind = results["plum-tiny, blind"]
    assert set(blind["text"]) == set(model["text"]) and blind["masks"] is not None
    assert blind["masks"] != model["masks"]  # the blind row's masks are the model's on a grey image
    assert results["whole-object"]["text"] == {} and set(results["whole-object"]["masks"]) == set(
        model["masks"]
    )
    assert set(model["text"]) == set(model["masks"]) and len(model["text"]) >= 4
    for row in model["masks"].values():
        assert 0 <= row["micro_giou"] <= 1 and 0 <= row["macro_giou"] <= 1
    assert all(
        r["accuracy"] == 1 and r["precision"] == 1 and r["recall"] == 1
        for r in results["oracle-text"]["text"].values()
    )
    header, dump = read_records(tmp_path / "run" / "predictions.jsonl")
    assert header["model"].endswith("plum-tiny") and len(header["fingerprint"]) == 16
    assert header["dtype"] == "float32"
    assert len(dump) == 12 and len({d["id"] for d in dump}) == 12
    for record in dump:
        assert len(record["scores"]) == 5 and record["chosen"] == int(np.argmax(record["scores"]))
        assert len(record["masks"]) == len(record["mask_parts"]) == len(record["spans"])
        assert isinstance(record["masks"][0]["counts"], str)
        if record["question_type"] in ("part2whole", "whole2part"):
            assert len(record["object_scores"]) == 5
    tables = (tmp_path / "run" / "tables.md").read_text()
    assert "Table 2" in tables and "Table 3" in tables and "| oracle-text |" in tables
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results


def test_resume_and_rescore_from_the_dump(setup, tmp_path, caplog):
    model = ["--model", str(setup / "plum-tiny"), "--trust_remote_code"]
    full = evaluate(setup, tmp_path / "full", *model)
    dump = tmp_path / "partial" / "predictions.jsonl"
    dump.parent.mkdir()
    lines = (tmp_path / "full" / "predictions.jsonl").read_text().splitlines()
    dump.write_text("\n".join(lines[:6]) + "\n" + lines[6][:40])  # killed in the middle of writing line 7
    resumed = evaluate(setup, tmp_path / "partial", *model, "--name", "plum-tiny")
    assert "the last line is incomplete" in caplog.text
    header, records = read_records(dump)
    assert (
        len(records) == 12 and len({r["id"] for r in records}) == 12
    )  # the torn question was predicted again
    assert resumed == full
    rescored = evaluate(
        setup,
        tmp_path / "rescored",
        "--from-predictions",
        str(tmp_path / "full" / "predictions.jsonl"),
        "--name",
        "plum-tiny",
    )
    assert {k: v for k, v in rescored.items()} == {k: v for k, v in full.items() if k != "plum-tiny, blind"}


def test_resuming_with_another_model_is_refused(setup, tmp_path):
    from modeling_plum.convert import build_tiny

    evaluate(
        setup, tmp_path / "run", "--model", str(setup / "plum-tiny"), "--trust_remote_code", "--limit", "3"
    )
    other, processor = build_tiny(seed=7)
    other.save_pretrained(tmp_path / "other")
    processor.save_pretrained(tmp_path / "other")
    with pytest.raises(
        ValueError, match=r"holds predictions of .*plum-tiny \(weights \w+\); this run evaluates .*other"
    ):
        evaluate(
            setup, tmp_path / "run", "--model", str(tmp_path / "other"), "--trust_remote_code", "--overwrite"
        )


def test_remote_code_needs_the_flag_and_dtype_is_honoured(setup, tmp_path):
    with pytest.raises(ValueError, match="pass --trust_remote_code"):
        evaluate(setup, tmp_path / "run", "--model", str(setup / "plum-tiny"))
    model = ["--model", str(setup / "plum-tiny"), "--trust_remote_code", "--limit", "3", "--no-blind"]
    evaluate(setup, tmp_path / "bf16", *model, "--dtype", "bfloat16")
    header, _ = read_records(tmp_path / "bf16" / "predictions.jsonl")
    assert header["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "bf16" / "throughput.json").read_text())["dtype"] == "bfloat16"
    # the same checkpoint in its own dtype into that --out: refused, saying that the dtype differs
    with pytest.raises(ValueError, match=r"in bfloat16; this run evaluates it in float32"):
        evaluate(setup, tmp_path / "bf16", *model, "--overwrite")
    mapped = evaluate(setup, tmp_path / "mapped", *model, "--device-map", "auto")
    assert mapped["plum-tiny"] == evaluate(setup, tmp_path / "plain", *model)["plum-tiny"]


def test_random_baseline_matches_its_expectation(setup):
    import datasets

    rows = list(datasets.load_dataset(str(setup / "data"), "toy", split="validation"))
    expected = evaluation.expected_random_text(rows)
    draws = [evaluation.score(rows, evaluation.random_records(rows, seed))["text"] for seed in range(150)]
    for question_type, values in expected.items():
        questions = sum(r["question_type"] == question_type for r in rows)
        for metric in ("precision", "recall", "accuracy"):
            mean = np.mean([d[question_type][metric] for d in draws])
            # four standard errors of a mean of per-question values in [0, 1] over the draws
            bound = 4 * 0.5 / np.sqrt(questions * len(draws))
            assert mean == pytest.approx(values[metric], abs=bound), (question_type, metric)
