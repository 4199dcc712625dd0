"""Damaged checkpoints (issue 20, item 8): every saved file's sha256 is in the manifest and checked on resume; `latest`
skips a damaged checkpoint to the newest intact one with a warning, a named one is refused with one `CheckpointError`
naming the file; a garbled file whose digest was taken damaged, and a malformed manifest, are `CheckpointError`s too; a
failed write (full disk) removes its partial folder and keeps the older checkpoints; no pickle is unpickled with
`weights_only=False`, and checkpoints written with accelerate's pickled scheduler state still resume."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from plum_training import checkpoints as ckpt
from plum_training.checkpoints import CheckpointError

from .test_training import run, toy_folder  # noqa: F401  (toy_folder: the module's toy dataset fixture)

ROOT = Path(__file__).resolve().parent.parent
SAME_SCHEDULE = ("--max_steps", "4", "--save_steps", "2", "--save_total_limit", "0")


@pytest.fixture(scope="module")
def written(toy_folder, tmp_path_factory):  # noqa: F811
    """A 4-step run of the tiny model with checkpoints 2 and 4 (4 with its export) and its log history."""
    out = tmp_path_factory.mktemp("written") / "run"
    result = run(toy_folder, out, *SAME_SCHEDULE)
    return out, result["history"]


@pytest.fixture
def out(written, tmp_path):
    """A copy of the written run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(written[0], copy)
    return copy


def overwrite(path: Path, offset: int, data: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def safetensors_header_size(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def rewrite_manifest(folder: Path, change):
    state = json.loads((folder / ckpt.STATE_FILE).read_text())
    change(state)
    (folder / ckpt.STATE_FILE).write_text(json.dumps(state))


def resume(toy_folder, out, checkpoint, *extra):  # noqa: F811
    return run(toy_folder, out, *SAME_SCHEDULE, "--resume_from_checkpoint", str(checkpoint), *extra)


def test_every_file_has_its_sha256_and_the_scheduler_is_json(written):
    out, _ = written
    for folder in ckpt.checkpoints(out):
        state = json.loads((folder / ckpt.STATE_FILE).read_text())
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert (
            sorted(state["sha256"]) == sorted(state["files"]) == [n for n in on_disk if n != ckpt.STATE_FILE]
        )
        assert all(state["sha256"][n] == ckpt.sha256(folder / n) for n in state["files"])
        assert ckpt.SCHEDULER_FILE in state["files"] and not list(folder.glob("custom_checkpoint_*.pkl"))
        assert json.loads((folder / ckpt.SCHEDULER_FILE).read_text())["last_epoch"] == state["step"]
    assert "model/model.safetensors" in state["sha256"]  # the export of the last checkpoint too


def test_overwritten_tensor_bytes_are_skipped_by_latest_and_refused_by_name(toy_folder, out, caplog):  # noqa: F811
    weights = out / "checkpoint-4" / "model.safetensors"
    start = safetensors_header_size(weights)
    overwrite(weights, start, b"\xff" * (weights.stat().st_size - start))  # NaNs, same size, header intact
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint-4 is not a complete checkpoint: model.safetensors was changed after it was written "
        r"\(its sha256 is not the one in training_state.json\)",
    ):
        resume(toy_folder, out, out / "checkpoint-4")
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        resumed = resume(toy_folder, out, "latest")
    assert [h["step"] for h in resumed["history"]] == [3, 4]  # from checkpoint-2
    assert all(math.isfinite(h["loss"]) for h in resumed["history"])
    warning = next(r.getMessage() for r in caplog.records if "skipping" in r.getMessage())
    assert "checkpoint-4" in warning and "model.safetensors was changed" in warning
    assert ckpt.incomplete_reason(out / "checkpoint-4") is None  # written again, intact


def test_a_garbled_header_is_a_checkpoint_error_even_when_its_digest_matches(toy_folder, out):  # noqa: F811
    folder = out / "checkpoint-4"
    overwrite(folder / "model.safetensors", 8, b"{garbled")
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4 is not a complete checkpoint: model.safetensors was"
    ):
        resume(toy_folder, out, folder)
    # damaged before its digest was taken (or a checkpoint written before digests): loading names the checkpoint
    digest = ckpt.sha256(folder / "model.safetensors")
    rewrite_manifest(folder, lambda state: state["sha256"].update({"model.safetensors": digest}))
    with pytest.raises(
        CheckpointError, match=r"checkpoint .*checkpoint-4 cannot be loaded: SafetensorError: "
    ):
        resume(toy_folder, out, folder)


def _drop(key):
    return lambda state: state.pop(key)


MALFORMED = {
    "missing key": (_drop("epoch"), r"training_state.json lacks 'epoch'"),
    "wrong type": (
        lambda s: s.update(step="two"),
        r"training_state.json: step is 'two', not a whole number >= 0",
    ),
    "negative": (lambda s: s.update(batch_in_epoch=-1), r"batch_in_epoch is -1, not a whole number >= 0"),
    "boolean": (lambda s: s.update(epoch=True), r"epoch is True, not a whole number >= 0"),
    "schedule": (lambda s: s.update(schedule=[1]), r"schedule is \[1\], not an object"),
    "files": (
        lambda s: s.update(files=["model.safetensors"]),
        r"files is not an object of file names .* and sizes",
    ),
    "outside": (lambda s: s["files"].update({"../x": 1}), r"files is not an object of file names"),
    "digests": (
        lambda s: s.update(sha256="abc"),
        r"sha256 is not an object of file names and sha256 digests",
    ),
    "unlisted digest": (
        lambda s: s["sha256"].pop("optimizer.bin"),
        r"lists 'optimizer.bin' with a size but no",
    ),
    "empty": (lambda s: s.clear(), r"training_state.json lacks 'step'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_skipped_by_latest_and_refused_by_name(out, case, caplog):
    change, message = MALFORMED[case]
    rewrite_manifest(out / "checkpoint-4", change)
    with pytest.raises(CheckpointError, match=rf"checkpoint-4 is not a complete checkpoint: .*{message}"):
        ckpt.resolve_resume(str(out / "checkpoint-4"), out)
    with pytest.raises(CheckpointError, match=rf"checkpoint-4 is not a complete checkpoint: .*{message}"):
        ckpt.read_state(out / "checkpoint-4")
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        assert ckpt.resolve_resume("latest", out).name == "checkpoint-2"
    assert any("skipping" in r.getMessage() and "checkpoint-4" in r.getMessage() for r in caplog.records)


def test_a_manifest_that_is_not_json_or_not_an_object(out):
    (out / "checkpoint-4" / ckpt.STATE_FILE).write_bytes(b"\xff\xfe{")
    assert "training_state.json is not readable JSON" in ckpt.incomplete_reason(out / "checkpoint-4")
    (out / "checkpoint-4" / ckpt.STATE_FILE).write_text("[1, 2]")
    assert ckpt.incomplete_reason(out / "checkpoint-4") == "training_state.json holds a list, not an object"


def test_the_trainer_refuses_a_malformed_manifest_with_a_checkpoint_error(toy_folder, out):  # noqa: F811
    rewrite_manifest(out / "checkpoint-4", _drop("epoch"))
    with pytest.raises(CheckpointError, match=r"checkpoint-4 is not a complete checkpoint: .* lacks 'epoch'"):
        resume(toy_folder, out, out / "checkpoint-4")


def test_no_intact_checkpoint_left_is_an_error_not_a_fresh_start(out):
    rewrite_manifest(out / "checkpoint-4", _drop("step"))
    (out / "checkpoint-2" / "optimizer.bin").unlink()
    with pytest.raises(
        CheckpointError, match=r"holds no intact checkpoint to resume from: checkpoint .*checkpoint-4"
    ):
        ckpt.resolve_resume("latest", out)
    assert ckpt.resolve_resume("latest", out / "empty") is None  # no checkpoint at all: a fresh start


def test_a_full_disk_while_saving_removes_the_partial_folder_and_keeps_the_older_ones(
    toy_folder,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import accelerate.checkpointing

    original = accelerate.checkpointing.save

    def save_until_full(obj, path, *args, **kwargs):
        if ".checkpoint-4.partial" in str(path):
            Path(path).write_bytes(b"\0" * 64)  # half-written
            raise OSError(28, "No space left on device")
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(accelerate.checkpointing, "save", save_until_full)
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint .*checkpoint-4 could not be written \(OSError: \[Errno 28\] No space left on device; "
        r"[\d,]+ MiB free there\); its partial folder was removed, the checkpoints written before are kept "
        r"\(checkpoint-2\)",
    ):
        run(toy_folder, out, *SAME_SCHEDULE)
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    assert ckpt.incomplete_reason(out / "checkpoint-2") is None
    monkeypatch.setattr(accelerate.checkpointing, "save", original)
    assert [h["step"] for h in resume(toy_folder, out, "latest")["history"]] == [3, 4]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:664] . basic_ios::clear: iostream error"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_torch_and_safetensors_write_errors_are_checkpoint_errors_too(tmp_path, error):
    (tmp_path / "checkpoint-2").mkdir()
    partial, final = tmp_path / ".checkpoint-4.partial", tmp_path / "checkpoint-4"
    with pytest.raises(
        CheckpointError, match=rf"checkpoint {final} could not be written \({type(error).__name__}: "
    ):
        with ckpt.writing(partial, final):
            partial.mkdir()
            raise error
    assert not partial.exists() and (tmp_path / "checkpoint-2").exists()


def test_the_save_hook_keeps_the_trained_parameters_and_refuses_a_state_without_them(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    state = model.state_dict()
    ckpt.trainable_only_hook([model], [state], str(tmp_path))
    assert sorted(state) == ["1.bias", "1.weight"]  # the frozen layer is not written again
    # a state keyed otherwise than the model (as DDP's "module." names were) would be written empty: it is an error,
    # which `writing` turns into a CheckpointError naming the checkpoint and removes the partial folder
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    partial, final = tmp_path / ".checkpoint-2.partial", tmp_path / "checkpoint-2"
    with pytest.raises(CheckpointError, match=r"lacks 2 trained parameters"):
        with ckpt.writing(partial, final):
            partial.mkdir()
            ckpt.trainable_only_hook([model], [prefixed], str(partial))
    assert not partial.exists()


def make_legacy(folder: Path):
    """`folder` as the code before `scheduler.json` wrote it: accelerate's pickled scheduler state, sizes only."""
    state = json.loads((folder / ckpt.SCHEDULER_FILE).read_text())
    (folder / ckpt.SCHEDULER_FILE).unlink()
    torch.save(state, folder / "custom_checkpoint_0.pkl")  # what accelerate's save_custom_state writes

    def sizes_only(manifest):
        del manifest["sha256"]
        manifest["files"] = {
            p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ckpt.STATE_FILE
        }

    rewrite_manifest(folder, sizes_only)


def test_a_checkpoint_with_the_pickled_scheduler_resumes_without_unsafe_unpickling(
    toy_folder,  # noqa: F811
    written,
    out,
    monkeypatch,
):
    shutil.rmtree(out / "checkpoint-4")
    make_legacy(out / "checkpoint-2")
    loads = []
    original = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    resumed = resume(toy_folder, out, "latest")
    assert loads and all(w is True for w in loads)  # optimizer, RNG and the scheduler pickle
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    for a, b in zip(written[1][2:], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr"] == b["lr"]  # the schedule went on where it was


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_that_runs_code_is_refused_not_run(toy_folder, out):  # noqa: F811
    folder = out / "checkpoint-2"
    make_legacy(folder)
    marker = out / "code-ran"
    # what accelerate's load_custom_state (torch.load with weights_only=False) would run
    torch.save({"last_epoch": Exploit(str(marker))}, folder / "custom_checkpoint_0.pkl")
    size = (folder / "custom_checkpoint_0.pkl").stat().st_size
    rewrite_manifest(folder, lambda s: s["files"].update({"custom_checkpoint_0.pkl": size}))
    with pytest.raises(
        CheckpointError, match=r"checkpoint .*checkpoint-2 cannot be loaded: UnpicklingError: "
    ):
        resume(toy_folder, out, folder)
    assert not marker.exists()


def test_saving_never_removes_the_checkpoint_just_written(toy_folder, out):  # noqa: F811
    """Resumed from checkpoint-2 while a newer checkpoint-4 is there, a run of 3 steps keeps its own checkpoint-3."""
    run(
        toy_folder,
        out,
        "--max_steps",
        "3",
        "--save_total_limit",
        "1",
        "--override_resume_args",
        "--save_steps",
        "0",
        "--resume_from_checkpoint",
        str(out / "checkpoint-2"),
    )
    assert [p.name for p in ckpt.checkpoints(out)] == ["checkpoint-3"]


def test_the_command_line_names_a_damaged_checkpoint_in_one_line(toy_folder, out):  # noqa: F811
    weights = out / "checkpoint-4" / "model.safetensors"
    overwrite(weights, safetensors_header_size(weights), b"\0" * 64)
    argv = ["--dataset", str(toy_folder), "--output_dir", str(out), "--per_device_train_batch_size", "2"]
    argv += ["--gradient_accumulation_steps", "1", "--warmup_steps", "2", *SAME_SCHEDULE]
    argv += ["--resume_from_checkpoint", str(out / "checkpoint-4")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "train_accelerate.py"), *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.strip().splitlines()[-1]] and "Traceback" not in done.stderr
    assert "checkpoint-4 is not a complete checkpoint: model.safetensors was changed" in errors[0]
