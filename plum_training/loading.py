"""Loading a PLUM checkpoint (or the in-process `tiny` preset) for training or evaluation: the `--trust_remote_code`
gate, dtype and device placement, and a fingerprint of the weights."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import torch

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_PRESET = "tiny"


@contextlib.contextmanager
def remote_code_gate(path: str, trust_remote_code: bool):
    """transformers' refusal to run `path`'s code without `trust_remote_code` becomes our message naming the flag."""
    try:
        yield
    except ValueError as error:
        if "trust_remote_code" in str(error) and not trust_remote_code:
            raise ValueError(
                f"{path} holds its own model code (PLUM is a `trust_remote_code` model): read its .py files, then "
                "pass --trust_remote_code to run them"
            ) from None
        raise


def _from_pretrained_kwargs(dtype, device_map: str | None) -> dict:
    kwargs = {"dtype": DTYPES.get(dtype, dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def load_model_and_processor(
    name_or_path: str,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype = "auto",
    device_map: str | None = None,
    config_overrides: dict | None = None,
):
    """`AutoModel` + `AutoProcessor` for a PLUM folder or Hub id, or the in-process tiny preset (`"tiny"`, which runs
    no downloaded code). Without `trust_remote_code` a checkpoint that needs its code is refused with a message
    that says which flag allows it. `config_overrides` change config fields before the model is built (e.g.
    `{"use_feedback": False}`, `{"segmentation_query": "seg_token"}`)."""
    overrides = dict(config_overrides or {})
    if name_or_path == TINY_PRESET:
        from modeling_plum.convert import build_tiny

        if device_map is not None:
            raise ValueError(
                "a device map needs a saved model: the tiny preset is built in-process on the CPU"
            )
        model, processor = build_tiny(**overrides)
        if dtype not in ("auto", None):
            model = model.to(DTYPES.get(dtype, dtype))
        return model, processor
    from transformers import AutoModel, AutoProcessor

    kwargs = {**_from_pretrained_kwargs(dtype, device_map), **overrides}
    with remote_code_gate(name_or_path, trust_remote_code):
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if model.config.segmentation_query == "seg_token":  # the processor writes the [SEG] tokens
        processor.seg_token = processor.tokenizer.convert_ids_to_tokens(model.config.seg_token_index)
    return model, processor


def model_kind(name_or_path: str, trust_remote_code: bool = False) -> str:
    """`"plum"` for a PLUM checkpoint (or the tiny preset), `"image-text-to-text"` for any other model."""
    if name_or_path == TINY_PRESET:
        return "plum"
    from transformers import AutoConfig

    with remote_code_gate(name_or_path, trust_remote_code):
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return "plum" if config.model_type == "plum" else "image-text-to-text"


def load_image_text_to_text(
    name_or_path: str, trust_remote_code: bool = False, dtype="auto", device_map: str | None = None
):
    """Any transformers image-text-to-text model (`AutoModelForImageTextToText`) and its processor, which must carry a
    chat template."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with remote_code_gate(name_or_path, trust_remote_code):
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **_from_pretrained_kwargs(dtype, device_map)
        )
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            f"{name_or_path}: its processor has no chat template, which the answer choices are scored in"
        )
    return model, processor


def saved_parameter_count(folder: Path) -> int | None:
    """Elements of every tensor in a folder's safetensors files (read from their headers); None without any."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                total += int(np.prod(f.get_slice(key).get_shape()))
    return total


def check_config_fits_weights(folder: str, trust_remote_code: bool, plum: bool):
    """A local folder's config must describe the model its weights are: a config that says another architecture (a
    PLUM folder whose config.json says `llava`) would build a default-size model, gigabytes, before failing."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    saved = saved_parameter_count(Path(folder))
    if saved is None:
        return
    with remote_code_gate(folder, trust_remote_code):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            built = (AutoModel if plum else AutoModelForImageTextToText).from_config(
                config, trust_remote_code=trust_remote_code
            )
    expected = sum(p.numel() for p in built.parameters())
    if not 0.5 <= saved / max(expected, 1) <= 2.0:
        raise ValueError(
            f"{folder}/config.json describes a {config.model_type} model of {expected:,} parameters, but its weights "
            f"hold {saved:,}: the config does not belong to these weights"
        )


def load_any_model(name_or_path: str, trust_remote_code=False, dtype="auto", device_map=None, device=None):
    """A PLUM checkpoint (or the tiny preset) or any image-text-to-text model, with its processor, in eval mode on
    `device` (unless `device_map` placed it). A local folder's config is first checked against its weights."""
    plum = model_kind(name_or_path, trust_remote_code) == "plum"
    if Path(name_or_path).is_dir():
        check_config_fits_weights(name_or_path, trust_remote_code, plum)
    loader = load_model_and_processor if plum else load_image_text_to_text
    model, processor = loader(name_or_path, trust_remote_code, dtype, device_map)
    if device_map is None and device is not None:
        model = model.to(device)
    return model.eval(), processor


def row_name(path) -> str:
    """A results row's name for a model or predictions path: an export `…/run/checkpoint-922/model` is
    `run/checkpoint-922`; a predictions file its name (its folder's for `predictions.jsonl`); a local folder its name;
    a Hub id itself."""
    path = Path(str(path))
    if path.name == "model" and path.parent.name.startswith("checkpoint-"):
        return f"{path.parent.parent.name}/{path.parent.name}"
    if path.suffix == ".jsonl":
        return path.parent.name if path.stem.startswith("predictions") and path.parent.name else path.stem
    return path.name if path.exists() else str(path)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, samples: int = 64) -> str:
    """A short hash of the weights: every tensor's name, shape and dtype and `samples` values spread over it. Cheap at
    13 B parameters, and different for any two checkpoints that differ in more than a few values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel():
            picked = flat[:: max(1, flat.numel() // samples)][:samples].float().cpu()
            digest.update(picked.numpy().tobytes())
    return digest.hexdigest()[:16]
