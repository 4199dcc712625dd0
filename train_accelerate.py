"""Train PLUM on PARTONOMY with accelerate: LoRA on the language model, resumable checkpoints, Hub pushes.

    accelerate launch train_accelerate.py --model_name_or_path tiny --dataset partonomy --configs toy \\
        --output_dir runs/toy --max_steps 500
    accelerate launch train_accelerate.py --model_name_or_path plum-13b/ --trust_remote_code ...
    accelerate launch train_accelerate.py config.yaml          # the same arguments in a YAML file

Defaults follow the paper's Table 6 (AdamW 3e-4, betas 0.9/0.95, no weight decay, 100 warm-up steps then linear
decay, gradient clip 1.0, gradient accumulation 10, bf16 where the hardware has it, seed 42). Steps are optimizer
updates, on every number of processes: the learning-rate schedule is the same for 1 and N processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_linear_schedule_with_warmup

from metrics.giou import compute_giou
from metrics.partonomy_text import compute_partonomy_text
from plum_training.checkpoints import (
    EXPORT_DIR,
    EXPORT_FORMATS,
    STATE_FILE,
    CheckpointError,
    HubUploader,
    check_base_pointer,
    check_saved_parameters,
    checkpoints,
    export_model,
    finish_checkpoint,
    resolve_resume,
    trainable_only_hook,
    write_base_pointer,
)
from plum_training.data import Collator, conversation, epoch_order, load_training_data
from plum_training.history import LogHistory
from plum_training.loading import load_model_and_processor, weights_fingerprint
from plum_training.scoring import PlumChoiceScorer, choose

__all__ = [
    "EXPORT_FORMATS",
    "STATE_FILE",
    "Collator",
    "checkpoints",
    "conversation",
    "evaluate_model",
    "export_model",
    "parse_args",
    "prepare_trainable",
    "resolve_resume",
    "train",
]

logger = get_logger(__name__)
LORA_TARGETS = r".*\.language_model\..*\.(q_proj|v_proj)"  # the LM only, never CLIP
LOSS_NAMES = ("loss", "lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny", metadata={"help": "a PLUM folder / Hub id, or the preset `tiny`"}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "run the model code a checkpoint carries (PLUM is a trust_remote_code model); off by default"
        },
    )
    model_dtype: str = field(
        default="auto",
        metadata={"help": "dtype to load the weights in: auto (the checkpoint's), float32, bfloat16"},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "JSON of PlumConfig fields to change before the model is built: '{\"use_feedback\": false}'"
        },
    )
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_prompt_encoder: bool = field(
        default=True, metadata={"help": "train SAM's prompt encoder (Table 6: decoder + prompt encoder)"}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute LLaMA (and a trained SAM encoder) activations in backward"},
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="partonomy", metadata={"help": "a folder built by partonomy_dataset, or a Hub id"}
    )
    configs: list[str] = field(default_factory=lambda: ["toy"])
    train_split: str = "train"
    eval_split: str = "validation"
    sampling_probabilities: list[float] | None = field(
        default=None, metadata={"help": "mixture weights of the configs (e.g. the paper's 9 5 5 1)"}
    )
    max_eval_samples: int = 64


@dataclass
class TrainArguments:
    output_dir: str = "runs/plum"
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 10
    per_device_train_batch_size: int = 6
    max_steps: int = -1
    max_train_seconds: float = field(
        default=0, metadata={"help": "stop (and save) after this long; 0 = no limit"}
    )
    lr_schedule: str = field(
        default="steps",
        metadata={
            "help": "steps: warm-up, then linear decay to 0 at the last optimizer update (the paper's); time: "
            "warm-up, the peak rate, then linear decay to 0 over the last --decay_fraction of --max_train_seconds "
            "(a fixed time budget, as in make demo; tied to the clock, so a resumed run does not repeat it exactly)"
        },
    )
    num_train_epochs: int = 4
    logging_steps: int = 10
    eval_steps: int = 0
    decay_fraction: float = field(
        default=0.2,
        metadata={"help": "with --lr_schedule time: the share of the budget the rate decays over"},
    )
    eval_every_seconds: float = field(
        default=0,
        metadata={"help": "also evaluate every this many seconds of training (a learning curve in time)"},
    )
    save_steps: int = 500
    save_total_limit: int = 2
    seed: int = 42
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 where supported), bf16, fp16, no"}
    )
    log_with: str | None = field(
        default=None, metadata={"help": "an accelerate tracker: tensorboard, trackio, wandb, ..."}
    )
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    hub_token: str | None = None
    hub_endpoint: str | None = field(
        default=None, metadata={"help": "another Hub endpoint (HF_ENDPOINT also works)"}
    )
    upload_retries: int = 3
    export_format: str = field(default="merged", metadata={"help": "merged (LoRA folded in) or adapter"})
    export_every_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "write a loadable export into every checkpoint (by default: the last one, and pushed ones)"
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "a checkpoint folder or `latest`"}
    )


# ---------------------------------------------------------------------------------------------------- model


def prepare_trainable(model, args: ModelArguments):
    """LoRA on the LM's q/v projections; trainable lm_head, embed_tokens, mask decoder, prompt encoder and PLUM heads;
    frozen CLIP tower and projector; SAM's image encoder per the config."""
    from peft import LoraConfig, get_peft_model

    config = model.config
    if args.gradient_checkpointing:
        # non-reentrant: frozen inputs need no `enable_input_require_grads`, and DDP sees every parameter once
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=LORA_TARGETS,
        modules_to_save=None,
    )
    peft_model = get_peft_model(model, lora)
    base = peft_model.get_base_model()
    trainable = [
        base.llava.lm_head,
        base.llava.get_input_embeddings(),
        base.sam_mask_decoder,
        base.span_tagger,
        base.query_projector,
    ]
    if base.feedback_pooler is not None:
        trainable.append(base.feedback_pooler)
    if args.train_prompt_encoder and config.train_sam_prompt_encoder:
        trainable.append(base.sam_prompt_encoder)
    if config.train_sam_image_encoder:
        trainable.append(base.sam_image_encoder)
    if (
        config.segmentation_query == "seg_token"
    ):  # LISA's way: the [SEG] tokens, not the tagger, give the spans
        trainable.remove(base.span_tagger)
        base.span_tagger.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    # PLUM asks SAM for a single mask and never reads its IoU estimate: those heads get no gradient (and would
    # trip DDP's unused-parameter check), so they stay frozen.
    base.sam_mask_decoder.iou_prediction_head.requires_grad_(False)
    for mlp in base.sam_mask_decoder.output_hypernetworks_mlps[1:]:
        mlp.requires_grad_(False)
    # Nor does it prompt SAM with points or boxes.
    base.sam_prompt_encoder.point_embeddings.requires_grad_(False)
    base.sam_prompt_encoder.not_a_point_embed.requires_grad_(False)
    base.llava.model.vision_tower.requires_grad_(False)
    base.llava.model.multi_modal_projector.requires_grad_(False)
    return peft_model


def parameter_table(model) -> str:
    groups = {}
    for name, parameter in model.named_parameters():
        key = ".".join(name.replace("base_model.model.", "").split(".")[:2])
        total, trained = groups.get(key, (0, 0))
        groups[key] = (
            total + parameter.numel(),
            trained + (parameter.numel() if parameter.requires_grad else 0),
        )
    lines = [f"{'module':<40} {'parameters':>14} {'trainable':>14}"]
    lines += [f"{k:<40} {t:>14,} {r:>14,}" for k, (t, r) in sorted(groups.items())]
    total = sum(t for t, _ in groups.values())
    trained = sum(r for _, r in groups.values())
    lines.append(f"{'total':<40} {total:>14,} {trained:>14,} ({100 * trained / total:.2f}%)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_model(model, processor, rows) -> dict:
    """Teacher-forced masks (the correct answer's part spans, paired with the ground truth by part) → micro /
    macro gIoU; choice accuracy from shared-prefix choice scoring. Overall and per question type."""
    was_training = model.training
    model.eval()
    collator = Collator(processor)
    scorer = PlumChoiceScorer(model, processor)
    per_row = []
    for row in tqdm(rows, desc="evaluating", leave=False):
        batch = collator([row])
        batch.pop("gt_masks")
        out = model(**batch, output_logits=False)
        prediction = [m.numpy() for m in (out.pred_masks[0] > model.config.mask_threshold).cpu()]
        turns = [(row["question"], None)]
        if row["question_type"] == "whole2part":
            turns = [
                (row["object_question"], row["object_answer_choices"][row["object_correct_index"]]),
                turns[0],
            ]
        _, chosen = choose(scorer, row["image"], turns, row["answer_choices"])
        per_row.append((row["question_type"], prediction, list(row["masks"]), chosen, row["correct_index"]))
    model.train(was_training)

    def summarise(items):
        giou = compute_giou([i[1] for i in items], [i[2] for i in items])
        text = compute_partonomy_text([i[3] for i in items], [i[4] for i in items])
        return {
            "micro_giou": giou["micro_giou"],
            "macro_giou": giou["macro_giou"],
            "choice_accuracy": text["accuracy"],
            "questions": len(items),
        }

    result = summarise(per_row)
    result["per_type"] = {
        question_type: summarise([i for i in per_row if i[0] == question_type])
        for question_type in sorted({i[0] for i in per_row})
    }
    return result


# ---------------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    accelerator, model, processor, output_dir: Path, step, state, args, base, uploader=None, export=False
):
    """Training state (trainable parameters, optimizer, scheduler, RNG, data position) + the pointer to the base
    weights into a temporary folder, renamed to `checkpoint-<step>` only when complete; with `export` also a loadable
    export in `checkpoint-<step>/model`. The oldest checkpoints beyond `save_total_limit` are removed (after their
    upload finished)."""
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".checkpoint-{step}.partial"  # the same name on every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed mid-save
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    full_state = accelerator.get_state_dict(model) if export else None  # a collective under FSDP / DeepSpeed
    if accelerator.is_main_process:
        write_base_pointer(partial, *base)
        if export:
            export_model(
                accelerator.unwrap_model(model),
                processor,
                partial / EXPORT_DIR,
                args.export_format,
                full_state,
            )
        finish_checkpoint(partial, final, state)
        if uploader is not None and export:
            uploader.submit(final / EXPORT_DIR, f"checkpoint {step}")
            uploader.poll()
        keep = args.save_total_limit
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            if uploader is not None and uploader.waits_on(old / EXPORT_DIR):
                uploader.poll(wait=True)
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


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


# ---------------------------------------------------------------------------------------------------- training


class TrainingClock:
    """Seconds spent training: evaluations inside the run (`paused()`) do not count against the time budget."""

    def __init__(self):
        self.started, self.paused_for = time.monotonic(), 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started - self.paused_for

    @contextlib.contextmanager
    def paused(self):
        began = time.monotonic()
        try:
            yield
        finally:
            self.paused_for += time.monotonic() - began


def time_budget_schedule(
    optimizer, warmup_steps: int, seconds: float, clock: TrainingClock, decay: float = 0.2
):
    """Linear warm-up over `warmup_steps` updates, the peak rate, then linear decay to 0 over the last `decay` share of
    `seconds` of training on `clock`: the whole budget is spent learning and the rate still anneals at its end. (A
    decay over the whole budget was worse on the toy set: micro-gIoU 0.38 against 0.46 without decay, 7 minutes.)"""
    if seconds <= 0:
        raise ValueError("--lr_schedule time needs --max_train_seconds")

    def factor(step: int) -> float:
        warmup = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        remaining = 1.0 - clock.elapsed() / seconds
        return warmup * min(1.0, max(0.0, remaining / decay)) if decay > 0 else warmup * (remaining > 0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _upcast_trainable(model):
    """Trainable parameters in float32 (the optimizer's master weights) when the checkpoint was loaded in bf16 /
    fp16; the frozen base stays in its dtype and autocast runs the mixed matmuls."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.bfloat16, torch.float16):
            parameter.data = parameter.data.float()


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments) -> dict:
    mixed = args.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) else "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=mixed,
        log_with=args.log_with,
        project_dir=args.output_dir,
    )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format must be one of {EXPORT_FORMATS}, got {args.export_format!r}")

    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else None
    model, processor = load_model_and_processor(
        model_args.model_name_or_path,
        model_args.trust_remote_code,
        model_args.model_dtype,
        config_overrides=overrides,
    )
    base = (model_args.model_name_or_path, weights_fingerprint(model))
    model = prepare_trainable(model, model_args)
    if mixed != "no":
        _upcast_trainable(model)
    accelerator.print(parameter_table(model))
    train_data = load_training_data(
        data_args.dataset,
        data_args.configs,
        data_args.train_split,
        args.seed,
        data_args.sampling_probabilities,
    )
    eval_rows = None
    if args.eval_steps or args.eval_every_seconds:
        eval_data = datasets.load_dataset(data_args.dataset, data_args.configs[0], split=data_args.eval_split)
        eval_rows = list(eval_data.select(range(min(len(eval_data), data_args.max_eval_samples))))

    batches_per_epoch = math.ceil(
        len(train_data) / (args.per_device_train_batch_size * accelerator.num_processes)
    )
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else updates_per_epoch * args.num_train_epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
        foreach=True,  # one kernel per group of tensors: fewer, larger operations (measured 6 % faster on CPU)
    )
    # Defined in optimizer updates and stepped once per update by this loop. Not passed to `prepare`: accelerate's
    # wrapper steps a scheduler once per process, which runs the schedule N times too fast on N processes.
    clock = TrainingClock()
    if args.lr_schedule == "time":
        scheduler = time_budget_schedule(
            optimizer, args.warmup_steps, args.max_train_seconds, clock, args.decay_fraction
        )
    elif args.lr_schedule == "steps":
        scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, max_steps)
    else:
        raise ValueError(f"lr_schedule must be steps or time, got {args.lr_schedule!r}")
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_save_state_pre_hook(trainable_only_hook(model))
    if args.log_with:
        accelerator.init_trackers(
            "plum",
            config={
                k: str(v) for k, v in {**asdict(model_args), **asdict(data_args), **asdict(args)}.items()
            },
        )
    uploader = None
    if args.push_to_hub and accelerator.is_main_process:
        if not args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        uploader = HubUploader(
            args.hub_model_id, args.hub_token, args.hub_private_repo, args.hub_endpoint, args.upload_retries
        )

    history_file = LogHistory(output_dir, enabled=accelerator.is_main_process)
    step, epoch, batch_in_epoch = 0, 0, 0
    resume = resolve_resume(args.resume_from_checkpoint, output_dir)
    if resume is not None:
        check_base_pointer(resume, *base)
        load_checkpoint(accelerator, resume, model)
        state = json.loads((resume / STATE_FILE).read_text())
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        history_file.resume_at(step)
        accelerator.print(f"resumed from {resume} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    else:
        history_file.start_fresh()

    collator = Collator(processor)
    history, evals = [], []
    next_eval = args.eval_every_seconds

    def checkpoint_now(export):
        position = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}
        return save_checkpoint(
            accelerator, model, processor, output_dir, step, position, args, base, uploader, export
        )

    progress = tqdm(
        total=max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process
    )
    model.train()
    totals, micro_batches = {}, 0
    while step < max_steps:
        order = epoch_order(len(train_data), args.seed, epoch)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_data, order),
            batch_size=args.per_device_train_batch_size,
            collate_fn=collator,
            # its own generator: starting an iterator must not draw from the global RNG (dropout's), or a
            # resumed run would drift from an uninterrupted one
            generator=torch.Generator().manual_seed(args.seed + epoch),
        )
        loader = accelerator.prepare_data_loader(loader)  # batches on the model's device
        loader = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
        for batch in loader:
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for name in LOSS_NAMES:
                value = getattr(out, name)
                if value is not None:
                    totals[name] = totals.get(name, 0.0) + value.detach().float()
            micro_batches += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()  # once per optimizer update, whatever the number of processes
            step += 1
            progress.update(1)
            names = sorted(totals)
            means = accelerator.reduce(
                torch.stack([totals[n] for n in names]) / micro_batches, reduction="mean"
            )
            logs = {"step": step, "lr": scheduler.get_last_lr()[0], **dict(zip(names, means.tolist()))}
            totals, micro_batches = {}, 0
            history.append(logs)
            history_file.append(logs)
            accelerator.log({k: v for k, v in logs.items() if k != "step"}, step=step)  # as in the log file
            if step % args.logging_steps == 0:
                progress.set_postfix(loss=f"{logs['loss']:.3f}")
            by_steps = args.eval_steps and step % args.eval_steps == 0
            by_time = args.eval_every_seconds and clock.elapsed() >= next_eval
            if eval_rows and (by_steps or by_time):
                seconds = clock.elapsed()
                next_eval = (
                    (seconds // args.eval_every_seconds + 1) * args.eval_every_seconds
                    if by_time
                    else next_eval
                )
                with clock.paused():
                    if accelerator.is_main_process:
                        metrics = evaluate_model(accelerator.unwrap_model(model), processor, eval_rows)
                        overall = {k: v for k, v in metrics.items() if k != "per_type"}
                        accelerator.log({f"eval/{k}": v for k, v in overall.items()}, step=step)
                        accelerator.print(f"step {step}: {overall}")
                        evals.append({"step": step, "training_seconds": round(seconds, 1), **overall})
                        history_file.append(
                            {"step": step, "training_seconds": round(seconds, 1), "eval": overall}
                        )
                    accelerator.wait_for_everyone()
            out_of_time = args.max_train_seconds and clock.elapsed() > args.max_train_seconds
            if out_of_time:
                accelerator.print(
                    f"stopping at step {step}: --max_train_seconds {args.max_train_seconds} reached"
                )
                max_steps = step
            if args.save_steps and step % args.save_steps == 0 and step < max_steps:
                checkpoint_now(export=args.export_every_checkpoint or args.push_to_hub)
            if step >= max_steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    progress.close()
    final = checkpoint_now(export=True)
    result = {
        "history": history,
        "evals": evals,
        "training_seconds": round(clock.elapsed(), 1),
        "final_checkpoint": str(final),
    }
    if uploader is not None:
        uploader.poll(wait=True)
        commit = uploader.commits.get(str(final / EXPORT_DIR))
        if commit is not None:
            result["commit_url"] = commit.commit_url
            accelerator.print(f"pushed to {commit.commit_url}")
    accelerator.end_training()
    return result


def parse_args(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


if __name__ == "__main__":
    try:
        train(*parse_args())
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
