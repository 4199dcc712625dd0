"""Training checkpoints that hold only what training changes, loadable exports, and resumption.

A checkpoint (`output_dir/checkpoint-N/`) is `accelerator.save_state` restricted to the trainable parameters (LoRA,
the PLUM heads, SAM's decoder ...) plus the optimizer, scheduler, RNG and data position, and `base_model.json`: a
pointer to the frozen base weights (path or Hub id and their fingerprint). It is written into a temporary folder and
renamed when complete; `training_state.json` lists every file with its size, so an incomplete copy is recognised.
An export (`checkpoint-N/model/`) is a complete folder `AutoModel.from_pretrained` loads: the LoRA update folded into
the weights (`merged`) or beside them (`adapter`), built tensor by tensor on the CPU, never as a second copy of the
model on the accelerator.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
BASE_POINTER = "base_model.json"
EXPORT_DIR = "model"
EXPORT_FORMATS = ("merged", "adapter")
PEFT_PREFIX = "base_model.model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names it."""


# ---------------------------------------------------------------------------------------------------- finding


def checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, oldest first."""
    found = [
        p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def incomplete_reason(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    state_file = Path(folder) / STATE_FILE
    if not state_file.exists():
        return f"no {STATE_FILE}"
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as error:
        return f"{STATE_FILE} is not valid JSON ({error})"
    for name, size in state.get("files", {}).items():
        path = Path(folder) / name
        if not path.exists():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def resolve_resume(path: str | None, output_dir: Path) -> Path | None:
    """`latest`: the newest complete checkpoint of `output_dir` (incomplete ones are skipped with a warning naming
    them); a folder: that checkpoint, which must be complete."""
    if path is None:
        return None
    if path == "latest":
        for folder in reversed(checkpoints(output_dir)):
            reason = incomplete_reason(folder)
            if reason is None:
                return folder
            logger.warning("skipping %s: not a complete checkpoint (%s)", folder, reason)
        return None
    reason = incomplete_reason(Path(path))
    if reason is not None:
        raise CheckpointError(f"{path} is not a complete checkpoint: {reason}")
    return Path(path)


# ---------------------------------------------------------------------------------------------------- state


def trainable_only_hook(model):
    """An `accelerator.register_save_state_pre_hook` that keeps only the trainable parameters in the saved model
    state: the frozen base (13 B parameters for plum-13b) is not written again in every checkpoint."""
    names = {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    def hook(models, weights, output_dir):
        for state in weights:
            for key in [k for k in state if k not in names]:
                del state[key]

    return hook


def check_saved_parameters(folder: Path, model):
    """Every trainable parameter of `model` must be in the checkpoint's model state (accelerate's `model.safetensors`;
    FSDP and DeepSpeed write their own layouts, which their loaders check)."""
    path = Path(folder) / "model.safetensors"
    if not path.exists():
        return
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = set(f.keys())
    expected = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing = sorted(expected - saved)
    if missing:
        raise CheckpointError(
            f"checkpoint {folder} lacks {len(missing)} of the {len(expected)} trained parameters of this run "
            f"(e.g. {missing[:3]}): it was written with other training settings"
        )


def load_checkpoint(accelerator, folder: Path, model):
    """`accelerator.load_state` of a checkpoint that holds only the trainable parameters (each of which it must hold);
    any failure becomes one error that names the checkpoint."""
    check_saved_parameters(folder, model)
    try:
        accelerator.load_state(str(folder), strict=False)
    except Exception as error:  # torch, safetensors and pickle each raise their own types for a damaged file
        raise CheckpointError(
            f"checkpoint {folder} cannot be loaded: {type(error).__name__}: {error}"
        ) from None


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
    saved = json.loads(pointer.read_text())
    if saved["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"{folder} was trained on {saved['model_name_or_path']} (weights {saved['fingerprint']}), but this run "
            f"loaded {model_name_or_path} (weights {fingerprint}); resume with the same --model_name_or_path"
        )


def finish_checkpoint(partial: Path, final: Path, state: dict):
    """Lists every file with its size in `STATE_FILE` (written last), then renames the folder into place."""
    files = {str(p.relative_to(partial)): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()}
    (partial / STATE_FILE).write_text(json.dumps({**state, "files": files}, indent=1))
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
