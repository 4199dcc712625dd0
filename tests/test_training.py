"""train_accelerate.py: a short run learns and logs every update, exports load, resuming from a saved folder equals not
stopping, checkpoints hold only what training changes, broken checkpoints are named, trackers get the log's values,
gradient checkpointing changes nothing, Hub pushes survive failures, and (slow) two gloo processes keep one
learning-rate schedule and survive batches that leave a module idle."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from partonomy_dataset import __main__ as dataset_cli
from partonomy_dataset.hub_folder import write_config
from plum_training import trainer
from plum_training.arguments import parse_args
from plum_training.checkpoints import CheckpointError, incomplete_reason
from plum_training.history import read_history

from .hub_stub import HubStub

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "partonomy"
    assert dataset_cli.main(["build", "--config", "toy", "--out", str(out), "--toy-num-images", "34"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The user's path: a PLUM folder on disk, loaded back with `--trust_remote_code`."""
    from modeling_plum.convert import main

    folder = tmp_path_factory.mktemp("model") / "plum-tiny"
    main(["--preset", "tiny", "--out", str(folder), "--seed", "1"])
    return folder


def run(toy_folder, output_dir, *extra):
    argv = [
        "--dataset",
        str(toy_folder),
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--warmup_steps",
        "2",
        "--logging_steps",
        "1",
        *extra,
    ]
    return trainer.train(*parse_args(argv))


def trainable_names(checkpoint: Path) -> set:
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        return set(f.keys())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_short_run_learns_logs_every_update_and_exports_a_loadable_model(toy_folder, tmp_path):
    result = run(
        toy_folder, tmp_path / "run", "--max_steps", "60", "--learning_rate", "1e-3", "--save_steps", "0"
    )
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    logged = read_history(tmp_path / "run" / "log_history.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 61))
    for name in ("loss", "lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss", "lr"):
        assert name in logged[-1], name
    assert logged == result["history"]
    assert logged[0]["lr"] == pytest.approx(1e-3 / 2) and logged[1]["lr"] == pytest.approx(1e-3)  # warm-up 2
    assert logged[-1]["kl_loss"] > 0  # LoRA moved the LM away from its frozen self
    final = Path(result["final_checkpoint"])
    model = AutoModel.from_pretrained(str(final / "model"), trust_remote_code=True)
    assert not any("lora_" in n for n, _ in model.named_parameters())  # LoRA merged into the export
    # the checkpoint holds the trained parameters only; the export is the whole model
    saved = trainable_names(final)
    assert saved and all(".base_layer." not in k and "vision_tower" not in k for k in saved)
    assert any("lora_A" in k for k in saved) and any("sam_mask_decoder" in k for k in saved)
    assert json.loads((final / "base_model.json").read_text())["model_name_or_path"] == "tiny"


def test_adapter_and_merged_exports_load_and_agree(tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny()
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=trainer.LORA_TARGETS)
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # as after training, so that the adapter matters
            torch.nn.init.normal_(parameter, std=0.5)
    before = {n: p.clone() for n, p in peft_model.named_parameters()}
    trainer.export_model(peft_model, processor, tmp_path / "merged", "merged")
    trainer.export_model(peft_model, processor, tmp_path / "adapter", "adapter")
    assert all(
        torch.equal(p, before[n]) for n, p in peft_model.named_parameters()
    )  # the model is left as it was
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged = AutoModel.from_pretrained(str(tmp_path / "merged"), trust_remote_code=True)
    adapted = AutoModel.from_pretrained(str(tmp_path / "adapter"), trust_remote_code=True)
    assert any("lora_" in n for n, _ in adapted.named_parameters())
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    image_tokens = model.config.llava_config.image_seq_length
    ids = torch.randint(3, 300, (1, image_tokens + 14))
    ids[0, 1 : 1 + image_tokens] = model.config.image_token_index
    size = model.config.llava_config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = peft_model.get_base_model().llava(input_ids=ids, pixel_values=pixels).logits
        plain = model.llava(input_ids=ids, pixel_values=pixels).logits
        for loaded in (merged, adapted):
            assert torch.allclose(
                loaded.llava(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-4
            )
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter did change the model
    with pytest.raises(ValueError, match="export_format must be one of"):
        trainer.export_model(peft_model, processor, tmp_path / "x", "gguf")


def test_a_fine_tune_from_a_saved_folder_resumes_with_identical_losses(toy_folder, tiny_folder, tmp_path):
    model = ["--model_name_or_path", str(tiny_folder), "--trust_remote_code"]
    straight = run(toy_folder, tmp_path / "a", *model, "--max_steps", "6", "--save_steps", "3")
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    shutil.copy(tmp_path / "a" / "log_history.jsonl", tmp_path / "b" / "log_history.jsonl")  # with steps 4-6
    resumed = run(
        toy_folder,
        tmp_path / "b",
        *model,
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--resume_from_checkpoint",
        "latest",
    )
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6]
    for a, b in zip(straight["history"][3:], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr"] == b["lr"]
    logged = read_history(tmp_path / "b" / "log_history.jsonl")
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]  # the old 4-6 replaced, not repeated
    # a checkpoint is far smaller than the model: it holds what training changed
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert not (checkpoint / "model").exists()  # exports only for the last checkpoint (and pushed ones)
    assert (checkpoint / "model.safetensors").stat().st_size < 0.7 * (
        tiny_folder / "model.safetensors"
    ).stat().st_size


def test_a_time_budget_resumes_where_the_checkpoint_left_it(toy_folder, tmp_path):
    """A resumed `--max_train_seconds` run goes on from the seconds its checkpoint recorded: it stops when the run's
    budget is spent, keeps the time schedule's learning rate and evaluates on the run's cadence (it used to start the
    budget, the schedule and the evaluations anew); resumed from a checkpoint whose budget is spent, it makes no update
    (it used to make one at learning rate 0)."""
    timed = [
        "--lr_schedule",
        "time",
        "--max_train_seconds",
        "1000",
        "--max_steps",
        "8",
        "--learning_rate",
        "1e-3",
    ]
    timed += [
        "--eval_every_seconds",
        "300",
        "--max_eval_samples",
        "2",
        "--save_steps",
        "2",
        "--save_total_limit",
        "0",
    ]
    run(toy_folder, tmp_path, *timed)
    state_file = tmp_path / "checkpoint-2" / "training_state.json"
    state = json.loads(state_file.read_text())
    assert 0 < state["training_seconds"] < 300
    state["training_seconds"] = 999.999  # as if the budget were all but spent at step 2
    state_file.write_text(json.dumps(state))
    for later in ("checkpoint-4", "checkpoint-6", "checkpoint-8"):
        shutil.rmtree(tmp_path / later)
    resumed = run(toy_folder, tmp_path, *timed, "--resume_from_checkpoint", "latest")
    assert [h["step"] for h in resumed["history"]] == [3]  # one update spends the rest of the budget
    assert resumed["history"][0]["lr"] < 1e-5  # the schedule's end, not its peak
    assert resumed["evals"] == []  # the next evaluation was due at 1200 s, not at 300 s
    last = tmp_path / "checkpoint-3" / "training_state.json"
    assert json.loads(last.read_text())["training_seconds"] > 1000
    written = last.stat().st_mtime_ns
    again = run(toy_folder, tmp_path, *timed, "--resume_from_checkpoint", "latest")
    assert again["history"] == [] and again["final_checkpoint"] == str(tmp_path / "checkpoint-3")
    assert last.stat().st_mtime_ns == written  # nothing was left to train, nothing is written again
    state["training_seconds"] = "soon"
    state_file.write_text(json.dumps(state))
    assert "training_seconds is 'soon'" in incomplete_reason(tmp_path / "checkpoint-2")


def test_checkpoints_that_cannot_be_resumed_are_named(toy_folder, tiny_folder, tmp_path):
    run(toy_folder, tmp_path / "run", "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "0")
    out = tmp_path / "run"
    (out / "checkpoint-4" / "optimizer.bin").unlink()  # an incomplete copy
    assert trainer.resolve_resume("latest", out).name == "checkpoint-2"  # skipped with a warning
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4 is not a complete checkpoint: optimizer.bin is missing"
    ):
        run(toy_folder, out, "--max_steps", "6", "--resume_from_checkpoint", str(out / "checkpoint-4"))
    # a changed schedule is refused unless asked for
    with pytest.raises(CheckpointError, match=r"other schedule-defining arguments \(--max_steps 4 → 6\)"):
        run(toy_folder, out, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    with pytest.raises(CheckpointError, match=r"was trained on tiny .* but this run loaded .*plum-tiny"):
        run(
            toy_folder,
            out,
            "--model_name_or_path",
            str(tiny_folder),
            "--trust_remote_code",
            "--max_steps",
            "4",
            "--resume_from_checkpoint",
            str(out / "checkpoint-2"),
        )
    optimizer = out / "checkpoint-2" / "optimizer.bin"
    optimizer.write_bytes(b"\0" * optimizer.stat().st_size)  # damaged, same size
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint-2 cannot be loaded"):
        run(
            toy_folder,
            out,
            "--max_steps",
            "6",
            "--resume_from_checkpoint",
            "latest",
            "--override_resume_args",
        )


def test_remote_code_needs_the_flag(toy_folder, tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="holds its own model code .* pass --trust_remote_code"):
        run(toy_folder, tmp_path / "run", "--model_name_or_path", str(tiny_folder), "--max_steps", "1")


def test_interrupted_save_keeps_the_previous_checkpoint(toy_folder, tmp_path, monkeypatch):
    calls = []
    original = trainer.export_model

    def export_then_fail(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-save")
        original(*args, **kwargs)

    monkeypatch.setattr(trainer, "export_model", export_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run(
            toy_folder, tmp_path / "run", "--max_steps", "4", "--save_steps", "2", "--export_every_checkpoint"
        )
    assert [p.name for p in trainer.checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    assert trainer.resolve_resume("latest", tmp_path / "run").name == "checkpoint-2"
    state = json.loads((tmp_path / "run" / "checkpoint-2" / trainer.STATE_FILE).read_text())
    assert state["step"] == 2
    monkeypatch.setattr(trainer, "export_model", original)
    resumed = run(
        toy_folder,
        tmp_path / "run",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
    )
    assert [h["step"] for h in resumed["history"]] == [3, 4]


def test_gradient_checkpointing_changes_nothing_but_memory(toy_folder, tmp_path):
    plain = run(toy_folder, tmp_path / "a", "--max_steps", "3", "--save_steps", "0")
    checkpointed = run(
        toy_folder, tmp_path / "b", "--max_steps", "3", "--save_steps", "0", "--gradient_checkpointing"
    )
    for a, b in zip(plain["history"], checkpointed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; a run with other mixed-precision settings needs it reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bf16_weights_train_with_float32_master_copies(toy_folder, tmp_path, fresh_accelerator_state):
    result = run(
        toy_folder,
        tmp_path / "run",
        "--model_dtype",
        "bfloat16",
        "--mixed_precision",
        "bf16",
        "--max_steps",
        "2",
        "--save_steps",
        "0",
    )
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result["history"])
    with safe_open(str(Path(result["final_checkpoint"]) / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # trained parameters in float32


def test_tensorboard_gets_the_logged_values(toy_folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(
        toy_folder, tmp_path / "run", "--max_steps", "3", "--save_steps", "0", "--log_with", "tensorboard"
    )
    events = EventAccumulator(str(next((tmp_path / "run").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    for name in ("loss", "mask_loss", "lr"):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([h[name] for h in result["history"]], rel=1e-6)


def test_trackio_gets_the_logged_values(toy_folder, tmp_path):
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from plum_training import trainer
from plum_training.arguments import parse_args
result = trainer.train(*parse_args([
    "--dataset", {str(toy_folder)!r}, "--output_dir", {str(tmp_path / "run")!r}, "--max_steps", "2",
    "--save_steps", "0", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
    "--log_with", "trackio"]))
from trackio.sqlite_storage import SQLiteStorage
runs = SQLiteStorage.get_runs("plum")
logs = SQLiteStorage.get_logs("plum", runs[-1])
print("RESULT", json.dumps({{"logged": [[r["step"], r["loss"]] for r in logs if "loss" in r],
                  "history": [[h["step"], h["loss"]] for h in result["history"]]}}))
"""
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    values = json.loads(line[len("RESULT ") :])
    assert len(values["logged"]) == 2
    assert [step for step, _ in values["logged"]] == [step for step, _ in values["history"]]
    assert [v for _, v in values["logged"]] == pytest.approx([v for _, v in values["history"]], rel=1e-6)


@pytest.fixture
def local_hub_online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)


def test_push_to_a_local_hub_survives_a_failure(toy_folder, tmp_path, local_hub_online):
    with HubStub(fail_commits=1, fail_status=507) as hub:  # a status huggingface_hub does not retry itself
        result = run(
            toy_folder,
            tmp_path / "run",
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "me/plum-toy",
            "--hub_token",
            "hf_test",
            "--hub_endpoint",
            hub.endpoint,
        )
    assert [h["step"] for h in result["history"]] == [1, 2, 3, 4]  # the failed upload did not stop training
    assert len(hub.commits) == 2  # checkpoint-2 (after one retry) and checkpoint-4
    assert all("model.safetensors" in c["files"] and "config.json" in c["files"] for c in hub.commits)
    final = next(c for c in hub.commits if c["summary"] == "checkpoint 4")
    assert result["commit_url"].endswith(final["oid"])  # the final push, awaited
    commit_calls = [path for method, path in hub.requests if "/commit/" in path]
    assert len(commit_calls) == 3  # one failure, our retry, the final push


def test_an_upload_that_never_succeeds_does_not_stop_training(toy_folder, tmp_path, local_hub_online):
    with HubStub(fail_commits=100, fail_status=507) as hub:
        result = run(
            toy_folder,
            tmp_path / "run",
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "me/plum-toy",
            "--hub_token",
            "hf_test",
            "--hub_endpoint",
            hub.endpoint,
            "--upload_retries",
            "2",
        )
    assert [h["step"] for h in result["history"]] == [1, 2] and not hub.commits
    assert "commit_url" not in result
    assert len([p for m, p in hub.requests if "/commit/" in p]) == 3  # the first try and 2 retries


# ---------------------------------------------------------------------------------------------- two processes


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_part_folder(tmp_path_factory):
    """Questions whose answers name one part each: a batch of them never runs the feedback pooler (no span k >= 1),
    which DDP rejects unless every trainable parameter still gets a gradient."""
    source = tmp_path_factory.mktemp("source") / "partonomy"
    assert dataset_cli.main(["build", "--config", "toy", "--out", str(source), "--toy-num-images", "60"]) == 0
    rows = datasets.load_dataset(str(source), "toy", split="train").filter(lambda r: len(r["parts"]) == 1)
    assert len(rows) >= 12
    folder = tmp_path_factory.mktemp("one-part") / "partonomy"
    report = {"instances": len(rows), "bad_files": [], "skipped_reading": {}, "skipped_questions": {}}
    write_config(folder, "toy", datasets.DatasetDict({"train": rows, "validation": rows}), report)
    return folder


def torchrun(script_args, env_extra=None, nproc=2, timeout=900):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",  # gloo processes on the CPU
        **(env_extra or {}),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *script_args,
    ]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, **pipes) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers as well, not torchrun alone
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_gloo_processes_one_schedule_one_part_batches_rank0_pushes_and_resume(one_part_folder, tmp_path):
    out = tmp_path / "ddp"
    common = ["--dataset", str(one_part_folder), "--gradient_accumulation_steps", "1", "--warmup_steps", "4"]
    common += ["--max_steps", "8", "--learning_rate", "1e-3"]
    with HubStub() as hub:
        done = torchrun(
            [
                str(ROOT / "tests" / "distributed_run.py"),
                *common,
                "--output_dir",
                str(out),
                "--per_device_train_batch_size",
                "1",
                "--save_steps",
                "4",
                "--push_to_hub",
                "--hub_model_id",
                "me/plum-ddp",
                "--hub_token",
                "hf_test",
                "--hub_endpoint",
                hub.endpoint,
            ],
            {"HF_HUB_OFFLINE": "0"},
        )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"] == list(range(1, 9))  # both processes stepped
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)  # in sync
    assert (out / "checkpoint-8" / "random_states_0.pkl").exists() and (
        out / "checkpoint-8" / "random_states_1.pkl"
    ).exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    assert len(hub.commits) == 2  # only rank 0 pushed (checkpoints 4 and 8)

    single = trainer.train(
        *parse_args([*common, "--output_dir", str(tmp_path / "single"), "--per_device_train_batch_size", "2"])
    )
    two = read_history(out / "log_history.jsonl")
    assert [r["step"] for r in two] == list(range(1, 9))  # written once, by the main process
    expected = [1e-3 * min(s / 4, (8 - s) / 4) for s in range(1, 9)]
    assert [r["lr"] for r in two] == pytest.approx(expected)
    assert [h["lr"] for h in single["history"]] == pytest.approx([r["lr"] for r in two])

    # resuming the two processes from checkpoint 4 (which holds every trained parameter) equals not stopping
    with safe_open(str(out / "checkpoint-4" / "model.safetensors"), "pt") as f:
        saved = sum(f.get_tensor(k).numel() for k in f.keys())
    assert saved == ranks[0]["grad_params"] > 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoint-4", resumed / "checkpoint-4")
    shutil.copy(out / "log_history.jsonl", resumed / "log_history.jsonl")
    arguments = [str(ROOT / "tests" / "distributed_run.py"), *common, "--output_dir", str(resumed)]
    arguments += [
        "--per_device_train_batch_size",
        "1",
        "--save_steps",
        "4",
        "--resume_from_checkpoint",
        "latest",
    ]
    done = torchrun(arguments)
    assert done.returncode == 0, done.stderr[-4000:]
    again = [json.loads((resumed / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert again[0]["steps"] == again[1]["steps"] == [5, 6, 7, 8]
    assert again[0]["checksum"] == pytest.approx(ranks[0]["checksum"], rel=1e-6)
    after = read_history(resumed / "log_history.jsonl")
    assert [r["step"] for r in after] == list(range(1, 9))
    assert [r["loss"] for r in after[4:]] == pytest.approx([r["loss"] for r in two[4:]], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_two_processes_with_skewed_clocks_take_time_decisions_together(one_part_folder, tmp_path):
    """A time budget and evaluations every second on two gloo processes whose clocks disagree by 0.7 s: both stop at
    the same update, evaluate at the same updates and apply the same learning rates (a decision taken on one
    process's clock left the other waiting at its next collective: `make demo` hung)."""
    out = tmp_path / "timed"
    arguments = [str(ROOT / "tests" / "distributed_run.py"), "--dataset", str(one_part_folder)]
    arguments += ["--output_dir", str(out), "--per_device_train_batch_size", "1", "--max_steps", "1000000"]
    arguments += [
        "--lr_schedule",
        "time",
        "--max_train_seconds",
        "6",
        "--warmup_steps",
        "2",
        "--save_steps",
        "0",
    ]
    arguments += ["--eval_every_seconds", "1", "--max_eval_samples", "2", "--learning_rate", "1e-3"]
    try:
        done = torchrun(arguments, {"PLUM_TEST_RANK1_CLOCK_AHEAD": "0.7"}, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("two processes with skewed clocks hung")
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["steps"]) >= 3 and ranks[0]["steps"] == ranks[1]["steps"]
    assert ranks[0]["lrs"] == ranks[1]["lrs"]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)
    evaluated = [r["step"] for r in read_history(out / "log_history.jsonl") if "eval" in r]
    assert len(evaluated) >= 2  # every second of 6
