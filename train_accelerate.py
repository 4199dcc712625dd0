"""Train PLUM on PARTONOMY with accelerate: LoRA on the language model, resumable checkpoints, Hub pushes.

    accelerate launch train_accelerate.py --model_name_or_path tiny --dataset partonomy --configs toy \\
        --output_dir runs/toy --max_steps 500
    accelerate launch train_accelerate.py config.yaml          # the same arguments in a YAML file

Defaults follow the paper's Table 6 (AdamW 3e-4, betas 0.9/0.95, no weight decay, 100 warm-up steps then linear
decay, gradient clip 1.0, gradient accumulation 10, bf16 where the hardware has it, seed 42).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, HfArgumentParser, get_linear_schedule_with_warmup

from metrics.giou import compute_giou
from metrics.partonomy_text import compute_partonomy_text
from partonomy_dataset import masks as rle

logger = get_logger(__name__)
LORA_TARGETS = r".*\.language_model\..*\.(q_proj|v_proj)"  # the LM only, never CLIP
STATE_FILE = "training_state.json"
LOSS_NAMES = ("loss", "lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny", metadata={"help": "a PLUM folder / Hub id, or the preset `tiny`"}
    )
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_prompt_encoder: bool = field(default=False, metadata={"help": "also train SAM's prompt encoder"})


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
    num_train_epochs: int = 4
    logging_steps: int = 10
    eval_steps: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    seed: int = 42
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 where supported), bf16, fp16, no"}
    )
    log_with: str | None = field(default=None, metadata={"help": "an accelerate tracker, e.g. tensorboard"})
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    hub_token: str | None = None
    hub_endpoint: str | None = field(
        default=None, metadata={"help": "another Hub endpoint (HF_ENDPOINT also works)"}
    )
    upload_retries: int = 3
    export_format: str = field(default="merged", metadata={"help": "merged (LoRA folded in) or adapter"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "a checkpoint folder or `latest`"}
    )


# ---------------------------------------------------------------------------------------------------- data


def conversation(row) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The correct answer's conversation (two turns for the part-whole types) and the parts to tag per turn."""
    parts_turn = (row["question"], row["answer_choices"][row["correct_index"]])
    if row["question_type"] == "part2whole":
        object_turn = (row["object_question"], row["object_answer_choices"][row["object_correct_index"]])
        return [parts_turn, object_turn], [row["parts"], []]
    if row["question_type"] == "whole2part":
        object_turn = (row["object_question"], row["object_answer_choices"][row["object_correct_index"]])
        return [object_turn, parts_turn], [[], row["parts"]]
    return [parts_turn], [row["parts"]]


class Collator:
    """Dataset rows → PLUM training batches (ground-truth masks decoded from RLE at the original size)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, rows):
        conversations, parts = zip(*(conversation(row) for row in rows))
        batch = self.processor(
            images=[row["image"] for row in rows], conversations=list(conversations), parts=list(parts)
        )
        batch.pop("spans")
        batch = dict(batch)
        batch["gt_masks"] = [
            torch.from_numpy(np.stack([rle.decode(m) for m in row["masks"]])).float() for row in rows
        ]
        return batch


def load_training_data(args: DataArguments, seed: int):
    parts = [datasets.load_dataset(args.dataset, config, split=args.train_split) for config in args.configs]
    if len(parts) == 1:
        return parts[0]
    probabilities = args.sampling_probabilities
    if probabilities is not None:
        if len(probabilities) != len(parts):
            raise ValueError(f"{len(probabilities)} sampling probabilities for {len(parts)} configs")
        probabilities = [p / sum(probabilities) for p in probabilities]
    return datasets.interleave_datasets(
        parts, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
    )


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows).tolist()


# ---------------------------------------------------------------------------------------------------- model


def load_model_and_processor(args: ModelArguments):
    if args.model_name_or_path == "tiny":
        from modeling_plum.convert import build_tiny

        return build_tiny()
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    return model, processor


def prepare_trainable(model, args: ModelArguments):
    """LoRA on the LM's q/v projections; trainable lm_head, embed_tokens, mask decoder and PLUM heads; frozen
    CLIP tower and projector; SAM image / prompt encoders per the config."""
    from peft import LoraConfig, get_peft_model

    config = model.config
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
    if args.train_prompt_encoder or config.train_sam_prompt_encoder:
        trainable.append(base.sam_prompt_encoder)
    if config.train_sam_image_encoder:
        trainable.append(base.sam_image_encoder)
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


def choose(model, processor, image, turns, choices) -> tuple[list[float], int]:
    """Scores of the answer choices after `turns` (the last one open) and the index of the best."""
    inputs = processor.choice_inputs(image, turns, choices)
    scores = model.score_choices(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
        inputs["choice_ids"],
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    return scores.tolist(), int(scores.argmax())


@torch.no_grad()
def evaluate_model(model, processor, rows) -> dict:
    """Teacher-forced masks (the correct answer's part spans, paired with the ground truth by part) → micro /
    macro gIoU; choice accuracy from shared-prefix choice scoring. Overall and per question type."""
    was_training = model.training
    model.eval()
    collator = Collator(processor)
    per_row = []
    for row in tqdm(rows, desc="evaluating", leave=False):
        batch = collator([row])
        batch.pop("gt_masks")
        out = model(**batch)
        prediction = [m.numpy() for m in (out.pred_masks[0].float() > model.config.mask_threshold)]
        turns = [(row["question"], None)]
        if row["question_type"] == "whole2part":
            turns = [
                (row["object_question"], row["object_answer_choices"][row["object_correct_index"]]),
                turns[0],
            ]
        _, chosen = choose(model, processor, row["image"], turns, row["answer_choices"])
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


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


EXPORT_FORMATS = ("merged", "adapter")


def export_model(model, processor, folder: Path, export_format: str = "merged"):
    """A folder `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads, with the processor and the
    remote-code files. `merged`: LoRA folded into the weights. `adapter`: the base weights (with every other
    trained module) plus the LoRA adapter beside them, which transformers attaches on load."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    is_peft = hasattr(model, "merge_and_unload")
    if not is_peft:
        model.save_pretrained(folder)
    elif export_format == "merged":
        copy.deepcopy(model).merge_and_unload().save_pretrained(folder)
    else:
        copy.deepcopy(model).unload().save_pretrained(folder)  # base weights, LoRA layers removed unmerged
        model.save_pretrained(folder)  # adapter_config.json + adapter_model.safetensors
    processor.save_pretrained(folder)


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

    def submit(self, folder, message, attempts=None):
        future = self.api.upload_folder(
            folder_path=str(folder), repo_id=self.repo_id, commit_message=message, run_as_future=True
        )
        self.pending.append((future, folder, message, self.retries if attempts is None else attempts))

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
                logger.warning(f"upload of {folder} failed ({error}); retrying, {attempts} tries left")
                future = self.api.upload_folder(
                    folder_path=str(folder), repo_id=self.repo_id, commit_message=message, run_as_future=True
                )
                still.append((future, folder, message, attempts - 1))
            else:
                logger.error(f"upload of {folder} failed for good: {error}")
        self.pending = still
        if wait and self.pending:
            self.poll(wait=True)

    def waits_on(self, folder) -> bool:
        return any(Path(f) == Path(folder) for _, f, _, _ in self.pending)


def save_checkpoint(
    accelerator, model, processor, output_dir: Path, step, state, keep, uploader=None, export_format="merged"
):
    """`save_state` + export into a temporary folder, renamed to `checkpoint-<step>` only when complete; the
    oldest checkpoints beyond `keep` are removed (after their upload finished)."""
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".checkpoint-{step}.partial"  # the same name on every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed mid-save
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        export_model(accelerator.unwrap_model(model), processor, partial / "model", export_format)
        (partial / STATE_FILE).write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        if uploader is not None:
            uploader.submit(final / "model", f"checkpoint {step}")
            uploader.poll()
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            if uploader is not None and uploader.waits_on(old / "model"):
                uploader.poll(wait=True)
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(path: str | None, output_dir: Path) -> Path | None:
    if path is None:
        return None
    if path == "latest":
        found = checkpoints(output_dir)
        return found[-1] if found else None
    if not (Path(path) / STATE_FILE).exists():
        raise FileNotFoundError(f"not a complete checkpoint (no {STATE_FILE}): {path}")
    return Path(path)


# ---------------------------------------------------------------------------------------------------- training


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

    model, processor = load_model_and_processor(model_args)
    model = prepare_trainable(model, model_args)
    accelerator.print(parameter_table(model))
    train_data = load_training_data(data_args, args.seed)
    eval_rows = None
    if args.eval_steps:
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
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if args.log_with:
        accelerator.init_trackers("plum", config={**asdict(model_args), **asdict(data_args), **asdict(args)})
    uploader = None
    if args.push_to_hub and accelerator.is_main_process:
        if not args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        uploader = HubUploader(
            args.hub_model_id, args.hub_token, args.hub_private_repo, args.hub_endpoint, args.upload_retries
        )

    step, epoch, batch_in_epoch = 0, 0, 0
    started = time.monotonic()
    resume = resolve_resume(args.resume_from_checkpoint, output_dir)
    if resume is not None:
        accelerator.load_state(str(resume))
        state = json.loads((resume / STATE_FILE).read_text())
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        accelerator.print(f"resumed from {resume} at step {step} (epoch {epoch}, batch {batch_in_epoch})")

    collator = Collator(processor)
    history = []

    def checkpoint_now():
        position = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}
        return save_checkpoint(
            accelerator,
            model,
            processor,
            output_dir,
            step,
            position,
            args.save_total_limit,
            uploader,
            args.export_format,
        )

    progress = tqdm(
        total=max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process
    )
    model.train()
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
        loader = accelerator.prepare_data_loader(loader, device_placement=False)
        loader = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
        for batch in loader:
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            logs = {k: float(getattr(out, k).detach()) for k in LOSS_NAMES if getattr(out, k) is not None}
            logs["lr"] = scheduler.get_last_lr()[0]
            history.append({"step": step, **logs})
            if step % args.logging_steps == 0:
                accelerator.log(logs, step=step)
                progress.set_postfix(loss=f"{logs['loss']:.3f}")
            if eval_rows and args.eval_steps and step % args.eval_steps == 0 and accelerator.is_main_process:
                metrics = evaluate_model(accelerator.unwrap_model(model), processor, eval_rows)
                overall = {k: v for k, v in metrics.items() if k != "per_type"}
                accelerator.log({f"eval/{k}": v for k, v in overall.items()}, step=step)
                accelerator.print(f"step {step}: {overall}")
            if args.save_steps and step % args.save_steps == 0:
                checkpoint_now()
            out_of_time = args.max_train_seconds and time.monotonic() - started > args.max_train_seconds
            if out_of_time:
                accelerator.print(
                    f"stopping at step {step}: --max_train_seconds {args.max_train_seconds} reached"
                )
                max_steps = step
            if step >= max_steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    progress.close()
    final = output_dir / f"checkpoint-{step}"
    if not (final / STATE_FILE).exists():  # not saved by the periodic save at this very step
        final = checkpoint_now()
    result = {"history": history, "final_checkpoint": str(final)}
    if uploader is not None:
        uploader.poll(wait=True)
        commit = uploader.commits.get(str(final / "model"))
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
    train(*parse_args())
