"""The training arguments (`HfArgumentParser` dataclasses, or one YAML file), with the paper's Table 6 as defaults:
AdamW 3e-4, betas 0.9 / 0.95, no weight decay, 100 warm-up steps then linear decay, gradient clip 1.0, gradient
accumulation 10, per-device batch 6, bf16 where the hardware has it, seed 42."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .preflight import UsageError

EXPORT_FORMATS = ("merged", "adapter")
LR_SCHEDULES = ("steps", "time")
# What defines the learning-rate schedule and the data order: a resumed run must keep them (or be told it may not).
SCHEDULE_FIELDS = (
    "learning_rate",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_schedule",
    "max_train_seconds",
    "decay_fraction",
    "seed",
)


def _help(text: str, default=None, **kwargs):
    if "default_factory" in kwargs:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class ModelArguments:
    model_name_or_path: str = _help(
        "a PLUM folder (convert's output, an export) or Hub id, or the preset `tiny`", "tiny"
    )
    trust_remote_code: bool = _help(
        "run the model code a checkpoint carries (PLUM is a remote-code model)", False
    )
    model_dtype: str = _help(
        "dtype to load the weights in: auto (the checkpoint's), float32, bfloat16", "auto"
    )
    config_overrides: str | None = _help(
        "JSON of PlumConfig fields changed before the model is built, e.g. '{\"use_feedback\": false}' or "
        "'{\"train_sam_prompt_encoder\": false}' (what trains besides LoRA is the config's to say)"
    )
    lora_r: int = _help("LoRA rank on the language model's q_proj / v_proj", 8)
    lora_alpha: int = _help("LoRA alpha", 16)
    lora_dropout: float = _help("LoRA dropout", 0.05)
    gradient_checkpointing: bool = _help(
        "recompute LLaMA (and a trained SAM encoder) activations in backward", False
    )


@dataclass
class DataArguments:
    dataset: str = _help(
        "a folder built by `python -m partonomy_dataset build`, or a Hub id (owner/name)", "partonomy"
    )
    configs: list[str] = _help("the PARTONOMY configs to train on", default_factory=lambda: ["toy"])
    train_split: str = _help("the split trained on", "train")
    eval_split: str = _help(
        "the split evaluated during training (--eval_steps / --eval_every_seconds)", "validation"
    )
    sampling_probabilities: list[float] | None = _help("mixture weights of the configs (the paper's 9 5 5 1)")
    max_eval_samples: int = _help("questions of each config's eval split evaluated during training", 64)


@dataclass
class TrainArguments:
    output_dir: str = _help("checkpoints, log_history.jsonl and exports go here", "runs/plum")
    learning_rate: float = _help("peak learning rate of AdamW", 3e-4)
    adam_beta1: float = _help("AdamW beta1", 0.9)
    adam_beta2: float = _help("AdamW beta2", 0.95)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    warmup_steps: int = _help("linear warm-up, in optimizer updates", 100)
    max_grad_norm: float = _help("gradient clipping", 1.0)
    gradient_accumulation_steps: int = _help("micro-batches per optimizer update", 10)
    per_device_train_batch_size: int = _help("questions per micro-batch and process", 6)
    max_steps: int = _help("optimizer updates to run; -1: --num_train_epochs", -1)
    num_train_epochs: int = _help("epochs, when --max_steps is -1", 4)
    max_train_seconds: float = _help("stop (and save) after this many seconds of training; 0: no limit", 0)
    lr_schedule: str = _help(
        "steps: warm-up, then linear decay to 0 at the last update (the paper's); time: warm-up, the peak rate, then "
        "linear decay to 0 over the last --decay_fraction of --max_train_seconds (a fixed time budget)",
        "steps",
    )
    decay_fraction: float = _help(
        "with --lr_schedule time: the share of the budget the rate decays over", 0.2
    )
    logging_steps: int = _help("show the loss in the progress bar every this many updates", 10)
    eval_steps: int = _help("evaluate every this many updates (0: never)", 0)
    eval_every_seconds: float = _help(
        "also evaluate every this many seconds of training (a learning curve)", 0
    )
    save_steps: int = _help("save a checkpoint every this many updates (0: only at the end)", 500)
    save_total_limit: int = _help("checkpoints kept (the oldest are removed)", 2)
    seed: int = _help("seed of initialisation, dropout and data order", 42)
    mixed_precision: str = _help("auto (bf16 where supported), bf16, fp16, no", "auto")
    sam_embedding_cache: int = _help(
        "with SAM's image encoder frozen, keep the embeddings of this many training images (0: recompute every step)",
        0,
    )
    log_with: str | None = _help("an accelerate tracker: tensorboard, trackio, wandb ...")
    push_to_hub: bool = _help("push exports to --hub_model_id in the background", False)
    hub_model_id: str | None = _help("the Hub repository exports are pushed to")
    hub_private_repo: bool = _help("create the Hub repository private", False)
    hub_token: str | None = _help("a Hub token (default: the logged-in one)")
    hub_endpoint: str | None = _help("another Hub endpoint (HF_ENDPOINT also works)")
    upload_retries: int = _help("retries of a failed upload", 3)
    export_format: str = _help("merged (LoRA folded in) or adapter (base + LoRA adapter)", "merged")
    export_every_checkpoint: bool = _help(
        "write a loadable export into every checkpoint (default: the last)", False
    )
    resume_from_checkpoint: str | None = _help("a checkpoint folder, or `latest` (the newest intact one)")
    override_resume_args: bool = _help("resume even though schedule-defining arguments changed", False)

    def __post_init__(self):
        if self.export_format not in EXPORT_FORMATS:
            raise UsageError(f"--export_format must be one of {EXPORT_FORMATS}, got {self.export_format!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"--lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "time" and self.max_train_seconds <= 0:
            raise UsageError("--lr_schedule time needs --max_train_seconds")
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id")

    def schedule(self) -> dict:
        return {name: getattr(self, name) for name in SCHEDULE_FIELDS}


def parse_args(argv=None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """The three dataclasses from command-line flags, or from one YAML file."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)
