"""Training checkpoints that hold only what training changes, loadable exports, and resumption.

A checkpoint (`output_dir/checkpoint-N/`) is `accelerator.save_state` restricted to the trainable parameters (LoRA,
the PLUM heads, SAM's decoder ...) plus the optimizer, RNG and data position, the learning-rate scheduler's state as
JSON (`scheduler.json`), and `base_model.json`: a pointer to the frozen base weights (path or Hub id and their
fingerprint). It is written into a temporary folder and renamed when complete; `training_state.json`, written last,
lists every file with its size and sha256, so an incomplete copy or a file damaged since is recognised before anything
is loaded. A write that fails (a full disk) removes the temporary folder and leaves the earlier checkpoints as they are.
Resuming unpickles no code: accelerate reads its `.bin` / `.pkl` files with `torch.load(weights_only=True)`, and the
scheduler state of checkpoints written before `scheduler.json` (accelerate's `custom_checkpoint_0.pkl`) is read the
same way, not with accelerate's `weights_only=False`.
An export (`checkpoint-N/model/`) is a complete folder `AutoModel.from_pretrained` loads: the LoRA update folded into
the weights (`merged`) or beside them (`adapter`), built tensor by tensor on the CPU, never as a second copy of the
model on the accelerator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
BASE_POINTER = "base_model.json"
SCHEDULER_FILE = "scheduler.json"
PICKLED_STATE = re.compile(r"^custom_checkpoint_\d+\.pkl$")  # accelerate's registered objects, pickled
POSITION_KEYS = ("step", "epoch", "batch_in_epoch")
TRAINING_SECONDS = "training_seconds"  # the run's training seconds at the checkpoint (0 when not recorded)
EXPORT_DIR = "model"
EXPORT_FORMATS = ("merged", "adapter")
PEFT_PREFIX = "base_model.model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, or written; the message names it."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


# ---------------------------------------------------------------------------------------------------- finding


def checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, oldest first."""
    found = [
        p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_file_name(name) -> bool:
    return (
        isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts
    )


def manifest_problem(state) -> str | None:
    """What is wrong with the parsed `training_state.json` of a checkpoint, or None: the data position (whole numbers),
    the training seconds so far (a number >= 0, when present), the schedule arguments (an object, when present), the
    files with their sizes and, since they are recorded, their sha256 digests (every listed file has one)."""
    if not isinstance(state, dict):
        return f"{STATE_FILE} holds a {type(state).__name__}, not an object"
    for key in (*POSITION_KEYS, "files"):
        if key not in state:
            return f"{STATE_FILE} lacks {key!r}"
    for key in POSITION_KEYS:
        if not _is_count(state[key]):
            return f"{STATE_FILE}: {key} is {state[key]!r}, not a whole number >= 0"
    seconds = state.get(TRAINING_SECONDS, 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        return f"{STATE_FILE}: training_seconds is {seconds!r}, not a number of seconds >= 0"
    if state.get("schedule") is not None and not isinstance(state["schedule"], dict):
        return f"{STATE_FILE}: schedule is {state['schedule']!r}, not an object"
    files = state["files"]
    if not isinstance(files, dict) or not all(_is_file_name(k) and _is_count(v) for k, v in files.items()):
        return f"{STATE_FILE}: files is not an object of file names (inside the checkpoint) and sizes"
    digests = state.get("sha256")
    if digests is None:
        return None  # written before checksums: sizes only
    if not isinstance(digests, dict) or not all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in digests.values()
    ):
        return f"{STATE_FILE}: sha256 is not an object of file names and sha256 digests"
    unmatched = sorted(set(files) ^ set(digests))
    if unmatched:
        return f"{STATE_FILE} lists {unmatched[0]!r} with a size but no sha256, or the other way round"
    return None


def _read_manifest(folder: Path) -> tuple[dict | None, str | None]:
    state_file = Path(folder) / STATE_FILE
    if not state_file.is_file():
        return None, f"no {STATE_FILE}"
    try:
        state = json.loads(state_file.read_bytes())
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{STATE_FILE} is not readable JSON ({_one_line(error)})"
    return state, manifest_problem(state)


def incomplete_reason(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is a complete, intact checkpoint: no or a malformed
    `training_state.json`, a listed file missing or of another size, or a file whose sha256 is not the recorded one."""
    folder = Path(folder)
    state, problem = _read_manifest(folder)
    if problem is not None:
        return problem
    for name, size in state["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    digests = state.get("sha256")
    if digests is None:
        logger.warning(
            "%s was written without sha256 digests: only the sizes of its files are checked", folder
        )
        return None
    for name, digest in digests.items():
        if sha256(folder / name) != digest:
            return f"{name} was changed after it was written (its sha256 is not the one in {STATE_FILE})"
    return None


def resolve_resume(path: str | None, output_dir: Path) -> Path | None:
    """`latest`: the newest complete, intact checkpoint of `output_dir` (the others are skipped with a warning naming
    them and why; when there are checkpoints but none is intact, a `CheckpointError` lists them); a folder: that
    checkpoint, which must be complete and intact."""
    if path is None:
        return None
    if path == "latest":
        skipped = []
        for folder in reversed(checkpoints(output_dir)):
            reason = incomplete_reason(folder)
            if reason is None:
                return folder
            logger.warning("skipping %s: not a complete, intact checkpoint (%s)", folder, reason)
            skipped.append(f"checkpoint {folder} cannot be loaded ({reason})")
        if skipped:
            raise CheckpointError(
                f"{output_dir} holds no intact checkpoint to resume from: {'; '.join(skipped)}"
            )
        return None
    reason = incomplete_reason(Path(path))
    if reason is not None:
        raise CheckpointError(f"{path} is not a complete checkpoint: {reason}")
    return Path(path)


def read_state(folder: Path) -> dict:
    """The checked `training_state.json` of a checkpoint: step, epoch, batch_in_epoch, schedule, files ..."""
    state, problem = _read_manifest(folder)
    if problem is not None:
        raise CheckpointError(f"{folder} is not a complete checkpoint: {problem}")
    return state


# ---------------------------------------------------------------------------------------------------- state


def trainable_names(model) -> set[str]:
    """Names of the parameters `model` trains, as its own `state_dict` keys them."""
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def trainable_only_hook(models, weights, output_dir):
    """An `accelerator.register_save_state_pre_hook` that keeps only the trainable parameters in the saved model
    state: the frozen base (13 B parameters for plum-13b) is not written again in every checkpoint.

    `models` are the models as `accelerator.prepare` received them, before DDP wraps one (whose names gain a
    `module.` prefix that the saved state does not have), so the names are read from them, at save time. A state
    that would lose a trained parameter is an error (a `RuntimeError`, which `writing` turns into a `CheckpointError`
    naming the checkpoint), never a checkpoint that cannot be resumed. FSDP and DeepSpeed save the whole model in
    their own layouts and pass no `weights`: there is nothing to filter."""
    for model, state in zip(models, weights):
        names = trainable_names(model)
        missing = sorted(names - set(state))
        if missing:
            raise RuntimeError(
                f"saving into {output_dir}: the model state lacks {len(missing)} trained parameters "
                f"(e.g. {missing[:3]})"
            )
        for key in [k for k in state if k not in names]:
            del state[key]


def save_training_state(accelerator, folder: Path, scheduler):
    """`accelerator.save_state` (every process) with the scheduler's state in `scheduler.json` (the main process): the
    scheduler is not registered with accelerate, which would pickle it (and unpickle it with `weights_only=False`)."""
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (Path(folder) / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict(), indent=1))


@contextlib.contextmanager
def _without_pickled_state(folder: Path):
    """`folder`, or, when it holds accelerate's pickled scheduler state (written before `scheduler.json`), a view of
    it without that file (symbolic links), so that accelerate does not unpickle it: `load_scheduler` reads it."""
    pickled = [name for name in os.listdir(folder) if PICKLED_STATE.match(name)]
    if not pickled:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="plum-resume-") as view:
        for name in os.listdir(folder):
            if name not in pickled:
                os.symlink(Path(folder, name).resolve(), Path(view, name))
        yield Path(view)


def load_scheduler(folder: Path, scheduler):
    """The scheduler's state from `scheduler.json`, or from the `custom_checkpoint_0.pkl` of an older checkpoint read
    with `weights_only=True` (plain numbers and lists; anything else is refused)."""
    path = Path(folder) / SCHEDULER_FILE
    if path.exists():
        state = json.loads(path.read_text())
    elif (Path(folder) / "custom_checkpoint_0.pkl").exists():
        import torch

        state = torch.load(Path(folder) / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(
            f"checkpoint {folder} holds no learning-rate scheduler state ({SCHEDULER_FILE})"
        )
    if not isinstance(state, dict) or not {"last_epoch", "base_lrs"} <= set(state):
        raise CheckpointError(f"checkpoint {folder}: the scheduler state is not a learning-rate scheduler's")
    scheduler.load_state_dict(state)


def check_saved_parameters(folder: Path, model):
    """Every trainable parameter of `model` must be in the checkpoint's model state (accelerate's `model.safetensors`;
    FSDP and DeepSpeed write their own layouts, which their loaders check)."""
    path = Path(folder) / "model.safetensors"
    if not path.exists():
        return
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = set(f.keys())
    expected = trainable_names(model)
    missing = sorted(expected - saved)
    if missing:
        raise CheckpointError(
            f"checkpoint {folder} lacks {len(missing)} of the {len(expected)} trained parameters of this run "
            f"(e.g. {missing[:3]}): it was written with other training settings"
        )


def load_checkpoint(accelerator, folder: Path, model, scheduler):
    """`accelerator.load_state` of a checkpoint that holds only the trainable parameters (each of which it must hold,
    under the names of the model before DDP wrapped it), then the scheduler's state; any failure becomes one
    `CheckpointError` that names the checkpoint."""
    try:
        check_saved_parameters(folder, accelerator.unwrap_model(model))
        with _without_pickled_state(folder) as source:
            accelerator.load_state(str(source), strict=False)
        load_scheduler(folder, scheduler)
    except CheckpointError:
        raise
    except Exception as error:  # torch, safetensors and pickle each raise their own types for a damaged file
        raise CheckpointError(f"checkpoint {folder} cannot be loaded: {_one_line(error)}") from None


def write_base_pointer(folder: Path, model_name_or_path: str, fingerprint: str):
    (Path(folder) / BASE_POINTER).write_text(
        json.dumps({"model_name_or_path": model_name_or_path, "fingerprint": fingerprint}, indent=1)
    )


def check_base_pointer(folder: Path, model_name_or_path: str, fingerprint: str):
    """The base the run was started from must be the base this checkpoint was trained on."""
    pointer = Path(folder) / BASE_POINTER
    if not pointer.exists():
        raise CheckpointError(
            f"{folder} has no {BASE_POINTER}: it does not say which base weights it extends"
        )
    try:
        saved = json.loads(pointer.read_bytes())
        saved_name, saved_fingerprint = saved["model_name_or_path"], saved["fingerprint"]
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder}: {BASE_POINTER} is malformed ({_one_line(error)})") from None
    if saved_fingerprint != fingerprint:
        raise CheckpointError(
            f"{folder} was trained on {saved_name} (weights {saved_fingerprint}), but this run "
            f"loaded {model_name_or_path} (weights {fingerprint}); resume with the same --model_name_or_path"
        )


# ---------------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def writing(partial: Path, final: Path, remove: bool = True):
    """Turns a failed write into the checkpoint's temporary folder (a full disk, a lost mount: `OSError`; torch's
    "iostream error" and safetensors' `SafetensorError` for the same causes) into a `CheckpointError` naming `final`.
    With `remove` (the main process) the temporary folder goes; the checkpoints written before stay as they are."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if remove:
            shutil.rmtree(partial, ignore_errors=True)
        try:
            free = f"{shutil.disk_usage(final.parent).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        kept = ", ".join(p.name for p in checkpoints(final.parent)) or "none"
        raise CheckpointError(
            f"checkpoint {final} could not be written ({_one_line(error)}; {free}); its partial folder was removed, "
            f"the checkpoints written before are kept ({kept})"
        ) from error


def finish_checkpoint(partial: Path, final: Path, state: dict):
    """Lists every file with its size and sha256 in `STATE_FILE` (written last), then renames the folder into place."""
    paths = [p for p in sorted(partial.rglob("*")) if p.is_file()]
    names = [p.relative_to(partial).as_posix() for p in paths]
    manifest = {
        **state,
        "files": {name: p.stat().st_size for name, p in zip(names, paths)},
        "sha256": {name: sha256(p) for name, p in zip(names, paths)},
    }
    (partial / STATE_FILE).write_text(json.dumps(manifest, indent=1))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


# ---------------------------------------------------------------------------------------------------- exports


def _lora_layers(base_model) -> dict:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    return {name: module for name, module in base_model.named_modules() if isinstance(module, LoraLayer)}


def export_state(model, state: dict, merge: bool, adapter: str = "default") -> dict:
    """The base model's state dict from a (peft) model's full state dict, on the CPU: peft's `base_layer` names
    restored, LoRA tensors dropped, and with `merge` each LoRA update `scaling * B @ A` added to its weight."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    clean, lora = {}, {}
    for key, tensor in state.items():
        key = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        if ".lora_" in key:
            lora[key] = tensor
        else:
            clean[key.replace(".base_layer.", ".")] = tensor.detach().cpu()
    if merge:
        for name, layer in _lora_layers(base).items():
            a = lora[f"{name}.lora_A.{adapter}.weight"].detach().cpu().float()
            b = lora[f"{name}.lora_B.{adapter}.weight"].detach().cpu().float()
            weight = clean[f"{name}.weight"]
            clean[f"{name}.weight"] = (weight.float() + layer.scaling[adapter] * (b @ a)).to(weight.dtype)
    return clean


def export_model(model, processor, folder: Path, export_format: str = "merged", state: dict | None = None):
    """A folder `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads, with the processor and the
    remote-code files. `merged`: LoRA folded into the weights. `adapter`: the base weights (with every other trained
    module) plus the LoRA adapter beside them, which transformers attaches on load.

    `state`: the model's full state dict when it had to be gathered (`accelerator.get_state_dict` under FSDP /
    DeepSpeed); by default `model.state_dict()`, which references the weights where they are."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    state = model.state_dict() if state is None else state
    is_peft = hasattr(model, "get_base_model")
    base = model.get_base_model() if is_peft else model
    base.save_pretrained(folder, state_dict=export_state(model, state, merge=export_format == "merged"))
    if is_peft and export_format == "adapter":
        model.save_pretrained(folder, state_dict=state)  # adapter_config.json + adapter_model.safetensors
    processor.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------- hub


class HubUploader:
    """Uploads exports in the background (`upload_folder(run_as_future=True)`); failures are logged and retried,
    never raised, so training does not stop for the network."""

    def __init__(self, repo_id, token=None, private=False, endpoint=None, retries=3):
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token)
        self.repo_id, self.retries = repo_id, retries
        self.api.create_repo(repo_id, private=private, exist_ok=True)
        self.pending = []  # (future, folder, message, attempts left)
        self.commits = {}

    def _upload(self, folder, message):
        return self.api.upload_folder(
            folder_path=str(folder), repo_id=self.repo_id, commit_message=message, run_as_future=True
        )

    def submit(self, folder, message, attempts=None):
        self.pending.append(
            (self._upload(folder, message), folder, message, self.retries if attempts is None else attempts)
        )

    def poll(self, wait=False):
        """Collects finished uploads into `self.commits` (folder → commit info); retries failed ones."""
        still = []
        for future, folder, message, attempts in self.pending:
            if not wait and not future.done():
                still.append((future, folder, message, attempts))
                continue
            error = future.exception()
            if error is None:
                self.commits[str(folder)] = future.result()
            elif attempts > 0:
                logger.warning("upload of %s failed (%s); retrying, %d tries left", folder, error, attempts)
                still.append((self._upload(folder, message), folder, message, attempts - 1))
            else:
                logger.error("upload of %s failed for good: %s", folder, error)
        self.pending = still
        if wait and self.pending:
            self.poll(wait=True)

    def waits_on(self, folder) -> bool:
        return any(Path(f) == Path(folder) for _, f, _, _ in self.pending)
