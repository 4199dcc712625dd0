"""Training PLUM with accelerate: LoRA on the language model, the heads and SAM's decoder trained, resumable
checkpoints, logs, in-training evaluation through the one evaluation path, Hub pushes.

    from plum_training.arguments import DataArguments, ModelArguments, TrainArguments
    from plum_training.trainer import PlumTrainer

    result = PlumTrainer(ModelArguments(...), DataArguments(dataset="outputs/partonomy"), TrainArguments(...)).train()

Steps are optimizer updates on every number of processes: the learning-rate schedule is defined in updates and
stepped once per update by the loop (accelerate's scheduler wrapper would step it once per process).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from . import evaluation
from .arguments import DataArguments, ModelArguments, TrainArguments
from .checkpoints import (
    EXPORT_DIR,
    STATE_FILE,  # noqa: F401  (trainer.STATE_FILE names the manifest for callers)
    TRAINING_SECONDS,
    CheckpointError,
    HubUploader,
    check_base_pointer,
    checkpoints,
    export_model,
    finish_checkpoint,
    load_checkpoint,
    read_state,
    resolve_resume,
    save_training_state,
    trainable_only_hook,
    write_base_pointer,
    writing,
)
from .data import Collator, epoch_order, load_training_data
from .embedding_cache import ImageEmbeddingCache
from .history import LogHistory
from .loading import load_model_and_processor, weights_fingerprint

logger = get_logger(__name__)
LORA_TARGETS = r".*\.language_model\..*\.(q_proj|v_proj)"  # the LM only, never CLIP
LOSS_NAMES = ("loss", "lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss")


# ---------------------------------------------------------------------------------------------------- the model


def prepare_trainable(model, args: ModelArguments):
    """LoRA on the LM's q/v projections; trainable lm_head, embed_tokens, mask decoder, prompt encoder and PLUM heads;
    frozen CLIP tower and projector; SAM's image encoder per the config."""
    from peft import LoraConfig, get_peft_model

    config = model.config
    if args.gradient_checkpointing:
        # non-reentrant: frozen inputs need no `enable_input_require_grads`, and DDP sees every parameter once
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=LORA_TARGETS
    )
    peft_model = get_peft_model(model, lora)
    base = peft_model.get_base_model()
    trainable = [
        base.llava.lm_head,
        base.llava.get_input_embeddings(),
        base.sam_mask_decoder,
        base.query_projector,
    ]
    if config.segmentation_query == "span":  # LISA's [SEG] tokens, not the tagger, give the spans otherwise
        trainable.append(base.span_tagger)
    if base.feedback_pooler is not None:
        trainable.append(base.feedback_pooler)
    if config.train_sam_prompt_encoder:
        trainable.append(base.sam_prompt_encoder)
    if config.train_sam_image_encoder:
        trainable.append(base.sam_image_encoder)
    for module in trainable:
        module.requires_grad_(True)
    # PLUM asks SAM for a single mask and never reads its IoU estimate, nor prompts with points or boxes: those
    # parameters get no gradient (and would trip DDP's unused-parameter check), so they stay frozen.
    frozen = [base.sam_mask_decoder.iou_prediction_head, *base.sam_mask_decoder.output_hypernetworks_mlps[1:]]
    frozen += [base.sam_prompt_encoder.point_embeddings, base.sam_prompt_encoder.not_a_point_embed]
    frozen += [base.llava.model.vision_tower, base.llava.model.multi_modal_projector]
    if config.segmentation_query != "span":
        frozen.append(base.span_tagger)
    for module in frozen:
        module.requires_grad_(False)
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
    total, trained = sum(t for t, _ in groups.values()), sum(r for _, r in groups.values())
    lines.append(f"{'total':<40} {total:>14,} {trained:>14,} ({100 * trained / total:.2f}%)")
    return "\n".join(lines)


def upcast_trainable(model):
    """Trainable parameters in float32 (the optimizer's master weights) when the checkpoint was loaded in bf16 / fp16;
    the frozen base stays in its dtype and autocast runs the mixed matmuls."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.bfloat16, torch.float16):
            parameter.data = parameter.data.float()


# ---------------------------------------------------------------------------------------------------- the clock


class TrainingClock:
    """Seconds spent training: evaluations inside the run (`paused()`) do not count against the time budget.

    `agreed` is the reading every process shares (`Trainer._agree_on_time`, once per update): decisions taken on each
    process's own clock (evaluate now, stop now, this learning rate) can differ, and a process that goes on while the
    other evaluates or stops waits forever at its next collective (measured: a 2-process `make demo` hung at its
    second evaluation)."""

    def __init__(self):
        self.start()

    def start(self, seconds_before: float = 0.0):
        """Counts from now, on top of `seconds_before` spent in the run that a checkpoint resumes."""
        self.started, self.paused_for = time.monotonic(), 0.0
        self.before = self.agreed = seconds_before

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started - self.paused_for

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
    `seconds` of training on `clock`: the whole budget is spent learning and the rate still anneals at its end."""

    def factor(step: int) -> float:
        warmup = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        remaining = 1.0 - clock.agreed / seconds
        return warmup * min(1.0, max(0.0, remaining / decay)) if decay > 0 else warmup * (remaining > 0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------------- the trainer


class PlumTrainer:
    """One training run: `PlumTrainer(model_args, data_args, args).train()` returns the log history, the in-training
    evaluations, the seconds spent and the final checkpoint (whose `model/` folder `AutoModel` loads)."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: TrainArguments):
        self.model_args, self.data_args, self.args = model_args, data_args, args
        mixed = args.mixed_precision
        if mixed == "auto":
            mixed = "bf16" if (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) else "no"
        self.mixed_precision = mixed
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=mixed,
            log_with=args.log_with,
            project_dir=args.output_dir,
        )
        set_seed(args.seed)
        self.output_dir = Path(args.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.clock = TrainingClock()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.resumed_seconds = 0.0
        self.resumed_from, self.resumed_step = None, None
        self.history, self.evals = [], []

    # -- setup ---------------------------------------------------------------------------------------------

    def _load_model(self):
        overrides = json.loads(self.model_args.config_overrides) if self.model_args.config_overrides else None
        model, self.processor = load_model_and_processor(
            self.model_args.model_name_or_path,
            self.model_args.trust_remote_code,
            self.model_args.model_dtype,
            config_overrides=overrides,
        )
        self.base = (self.model_args.model_name_or_path, weights_fingerprint(model))
        model = prepare_trainable(model, self.model_args)
        if self.mixed_precision != "no":
            upcast_trainable(model)
        self.accelerator.print(parameter_table(model))
        return model

    def _load_data(self):
        data, args = self.data_args, self.args
        self.train_data = load_training_data(
            data.dataset, data.configs, data.train_split, args.seed, data.sampling_probabilities
        )
        self.eval_rows = None
        if args.eval_steps or args.eval_every_seconds:  # the first questions of every config's eval split
            self.eval_rows = []
            for config in data.configs:
                rows = datasets.load_dataset(data.dataset, config, split=data.eval_split)
                self.eval_rows += list(rows.select(range(min(len(rows), data.max_eval_samples))))
        processes = self.accelerator.num_processes
        batches = math.ceil(len(self.train_data) / (args.per_device_train_batch_size * processes))
        updates_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        self.max_steps = args.max_steps if args.max_steps > 0 else updates_per_epoch * args.num_train_epochs

    def _optimizer_and_schedule(self, model):
        from transformers import get_linear_schedule_with_warmup

        args = self.args
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.weight_decay,
            foreach=True,  # one kernel per group of tensors: fewer, larger operations (measured 6 % faster on CPU)
        )
        if args.lr_schedule == "time":
            schedule = time_budget_schedule(
                optimizer, args.warmup_steps, args.max_train_seconds, self.clock, args.decay_fraction
            )
        else:
            schedule = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, self.max_steps)
        return optimizer, schedule

    def setup(self):
        args, accelerator = self.args, self.accelerator
        model = self._load_model()
        self._load_data()
        optimizer, self.scheduler = self._optimizer_and_schedule(model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_save_state_pre_hook(trainable_only_hook)
        if args.log_with:
            config = {**asdict(self.model_args), **asdict(self.data_args), **asdict(args)}
            accelerator.init_trackers("plum", config={k: str(v) for k, v in config.items()})
        self.uploader = None
        if args.push_to_hub and accelerator.is_main_process:
            self.uploader = HubUploader(
                args.hub_model_id,
                args.hub_token,
                args.hub_private_repo,
                args.hub_endpoint,
                args.upload_retries,
            )
        self.history_file = LogHistory(self.output_dir, enabled=accelerator.is_main_process)
        self.embeddings = None
        base = accelerator.unwrap_model(self.model).get_base_model()
        if args.sam_embedding_cache and not base.config.train_sam_image_encoder:
            self.embeddings = ImageEmbeddingCache(base, capacity=args.sam_embedding_cache)
        self._resume()

    def _resume(self):
        folder = resolve_resume(self.args.resume_from_checkpoint, self.output_dir)
        if folder is None:
            self.history_file.start_fresh()
            return
        check_base_pointer(folder, *self.base)
        state = read_state(folder)
        self._check_schedule(folder, state.get("schedule"))
        load_checkpoint(self.accelerator, folder, self.model, self.scheduler)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.resumed_seconds = state.get(TRAINING_SECONDS, 0.0)
        self.resumed_from, self.resumed_step = folder, self.step
        self.history_file.resume_at(self.step)
        self.accelerator.print(
            f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
        )

    def _check_schedule(self, folder: Path, saved: dict | None):
        """A resumed run keeps the arguments that define its schedule and data order, unless told otherwise."""
        if saved is None:
            return
        changed = {
            k: (v, self.args.schedule()[k]) for k, v in saved.items() if self.args.schedule().get(k) != v
        }
        if changed and not self.args.override_resume_args:
            listed = ", ".join(f"--{k} {old} → {new}" for k, (old, new) in changed.items())
            raise CheckpointError(
                f"{folder} was trained with other schedule-defining arguments ({listed}): resume with the same ones, "
                "or pass --override_resume_args to continue with the new ones"
            )

    # -- the loop ------------------------------------------------------------------------------------------

    def train(self) -> dict:
        self.setup()
        self.collator = Collator(self.processor, keep_images=self.embeddings is not None)
        self.progress = self._progress_bar()
        self.model.train()
        self.totals, self.micro_batches = {}, 0
        self.clock.start(self.resumed_seconds)  # loading and setting up are not training
        self.next_eval = self._next_eval_after(self.clock.agreed)
        # resumed from a checkpoint written after the budget ran out: no update is left
        if self._time_is_up():
            self.max_steps = self.step
        while self.step < self.max_steps:
            if self._run_epoch():
                break
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.progress.close()
        return self._finish()

    def _progress_bar(self):
        """Counts optimizer updates, or, with a time budget, the budget's seconds (the ETA is then the budget's end)."""
        hidden = not self.accelerator.is_local_main_process
        if self.args.max_train_seconds:
            total = round(self.args.max_train_seconds)
            initial = min(round(self.resumed_seconds), total)
            bar = tqdm(total=total, initial=initial, unit="s", desc="training", disable=hidden)
            bar.bar_format = "{l_bar}{bar}| {n:.0f}/{total} s [{elapsed}<{remaining}{postfix}]"
            return bar
        return tqdm(total=self.max_steps, initial=self.step, desc="training", unit="step", disable=hidden)

    def _advance_progress(self):
        if self.args.max_train_seconds:
            self.progress.update(min(self.clock.elapsed(), self.progress.total) - self.progress.n)
            self.progress.set_postfix(step=self.step, refresh=False)
        else:
            self.progress.update(1)

    def _loader(self):
        args = self.args
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(
                self.train_data, epoch_order(len(self.train_data), args.seed, self.epoch)
            ),
            batch_size=args.per_device_train_batch_size,
            collate_fn=self.collator,
            # its own generator: starting an iterator must not draw from the global RNG (dropout's), or a resumed run
            # would drift from an uninterrupted one
            generator=torch.Generator().manual_seed(args.seed + self.epoch),
        )
        loader = self.accelerator.prepare_data_loader(loader)  # batches on the model's device
        return (
            self.accelerator.skip_first_batches(loader, self.batch_in_epoch)
            if self.batch_in_epoch
            else loader
        )

    def _run_epoch(self) -> bool:
        """One pass over the data from the current position; True when the run is over."""
        for batch in self._loader():
            self.batch_in_epoch += 1
            out = self._micro_step(batch)
            for name in LOSS_NAMES:
                value = getattr(out, name)
                if value is not None:
                    self.totals[name] = self.totals.get(name, 0.0) + value.detach().float()
            self.micro_batches += 1
            if not self.accelerator.sync_gradients:
                continue
            self._agree_on_time()
            self.scheduler.step()  # once per optimizer update, whatever the number of processes
            self.step += 1
            self._advance_progress()
            self._log()
            self._maybe_evaluate()
            if self._time_is_up():
                self.accelerator.print(f"stopping at step {self.step}: --max_train_seconds reached")
                self.max_steps = self.step
            if self.args.save_steps and self.step % self.args.save_steps == 0 and self.step < self.max_steps:
                self.save_checkpoint(export=self.args.export_every_checkpoint or self.args.push_to_hub)
            if self.step >= self.max_steps:
                return True
        return False

    def _time_is_up(self) -> bool:
        """Whether the run's time budget is spent, by the training seconds every process agreed on."""
        return bool(self.args.max_train_seconds) and self.clock.agreed > self.args.max_train_seconds

    @property
    def timed(self) -> bool:
        """Whether time decides anything in this run (a time budget or timed evaluations)."""
        return bool(self.args.max_train_seconds or self.args.eval_every_seconds)

    def _training_seconds(self) -> float:
        """The run's training seconds so far: the reading every process agreed on when time decides anything (a resumed
        run goes on from it), else this process's own clock."""
        return self.clock.agreed if self.timed else self.clock.elapsed()

    def _agree_on_time(self):
        """Every process reads the same training seconds (the mean of their clocks) into `clock.agreed`; one scalar
        all-reduce per update, and none without a time budget or timed evaluations."""
        if self.timed:
            seconds = torch.tensor(
                [self.clock.elapsed()], dtype=torch.float64, device=self.accelerator.device
            )
            self.clock.agreed = float(self.accelerator.reduce(seconds, reduction="mean")[0])

    def _micro_step(self, batch):
        images = batch.pop("images", None)
        if self.embeddings is not None:  # SAM's encoder is frozen: each training image is encoded once
            batch["image_embeddings"] = self.embeddings.embeddings(images, batch.pop("sam_pixel_values"))
        with self.accelerator.accumulate(self.model):
            out = self.model(**batch)
            self.accelerator.backward(out.loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return out

    def _log(self):
        names = sorted(self.totals)
        means = self.accelerator.reduce(
            torch.stack([self.totals[n] for n in names]) / self.micro_batches, reduction="mean"
        )
        logs = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], **dict(zip(names, means.tolist()))}
        self.totals, self.micro_batches = {}, 0
        self.history.append(logs)
        self.history_file.append(logs)
        self.accelerator.log({k: v for k, v in logs.items() if k != "step"}, step=self.step)
        if self.step % self.args.logging_steps == 0:
            self.progress.set_postfix(step=self.step, loss=f"{logs['loss']:.3f}")

    def _maybe_evaluate(self):
        args = self.args
        by_steps = args.eval_steps and self.step % args.eval_steps == 0
        by_time = args.eval_every_seconds and self.clock.agreed >= self.next_eval
        if not self.eval_rows or not (by_steps or by_time):
            return
        seconds = self.clock.agreed
        if by_time:
            self.next_eval = self._next_eval_after(seconds)
        with self.clock.paused():
            if self.accelerator.is_main_process:
                self.evaluate_now(seconds)
            self.accelerator.wait_for_everyone()

    def _next_eval_after(self, seconds: float) -> float | None:
        """The first multiple of `--eval_every_seconds` after `seconds` of training."""
        every = self.args.eval_every_seconds
        return (seconds // every + 1) * every if every else None

    def evaluate_now(self, seconds: float) -> dict:
        """The evaluation library on the eval rows (what `eval_partonomy.py` computes), logged and kept."""
        model = self.accelerator.unwrap_model(self.model)
        result = evaluation.evaluate(model.get_base_model(), self.processor, self.eval_rows)
        overall = evaluation.headline(result)
        self.accelerator.log({f"eval/{k}": v for k, v in overall.items()}, step=self.step)
        self.accelerator.print(f"step {self.step}: {overall}")
        record = {"step": self.step, "training_seconds": round(seconds, 1), **overall}
        self.evals.append({**record, "result": result})
        self.history_file.append({"step": self.step, "training_seconds": round(seconds, 1), "eval": overall})
        return result

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save_checkpoint(self, export: bool) -> Path:
        """Training state (trainable parameters, optimizer, scheduler, RNG, data position, schedule arguments) and the
        base-weights pointer into a temporary folder, renamed to `checkpoint-<step>` when complete; with `export` also
        a loadable `checkpoint-<step>/model`. The oldest checkpoints beyond `save_total_limit` are removed."""
        accelerator, args = self.accelerator, self.args
        final = self.output_dir / f"checkpoint-{self.step}"
        partial = self.output_dir / f".checkpoint-{self.step}.partial"  # the same name on every rank
        accelerator.wait_for_everyone()
        # a failed write (full disk) is a CheckpointError naming `final`; the partial folder goes, older ones stay
        with writing(partial, final, remove=accelerator.is_main_process):
            if accelerator.is_main_process:
                import shutil

                shutil.rmtree(partial, ignore_errors=True)  # left by a run killed mid-save
                partial.mkdir(parents=True)
            accelerator.wait_for_everyone()
            save_training_state(accelerator, partial, self.scheduler)
            accelerator.wait_for_everyone()  # every process's files are in before the manifest lists them
            full_state = (
                accelerator.get_state_dict(self.model) if export else None
            )  # a collective under FSDP / DeepSpeed
            if accelerator.is_main_process:
                write_base_pointer(partial, *self.base)
                if export:
                    model = accelerator.unwrap_model(self.model)
                    export_model(model, self.processor, partial / EXPORT_DIR, args.export_format, full_state)
                state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
                state[TRAINING_SECONDS] = self._training_seconds()
                finish_checkpoint(partial, final, {**state, "schedule": args.schedule()})
        if accelerator.is_main_process:
            if self.uploader is not None and export:
                self.uploader.submit(final / EXPORT_DIR, f"checkpoint {self.step}")
                self.uploader.poll()
            self._remove_old_checkpoints(final)
        accelerator.wait_for_everyone()
        return final

    def _remove_old_checkpoints(self, written: Path):
        """The oldest checkpoints beyond `save_total_limit`, never the one just written (a newer one, left by an earlier
        run or skipped as damaged on resuming, may be older in training than it)."""
        import shutil

        keep = self.args.save_total_limit
        others = [folder for folder in checkpoints(self.output_dir) if folder != written]
        for old in others[: max(0, len(others) - (keep - 1))] if keep > 0 else []:
            if self.uploader is not None and self.uploader.waits_on(old / EXPORT_DIR):
                self.uploader.poll(wait=True)
            shutil.rmtree(old)

    def _finish(self) -> dict:
        seconds = self._training_seconds()  # training's, not the final save's
        if self.step == self.resumed_step and (self.resumed_from / EXPORT_DIR).is_dir():
            # nothing was trained: the run's last checkpoint stays as it was written
            final = self.resumed_from
        else:
            final = self.save_checkpoint(export=True)
        result = {
            "history": self.history,
            "evals": self.evals,
            "training_seconds": round(seconds, 1),
            "final_checkpoint": str(final),
        }
        if self.uploader is not None:
            self.uploader.poll(wait=True)
            commit = self.uploader.commits.get(str(final / EXPORT_DIR))
            if commit is not None:
                result["commit_url"] = commit.commit_url
                self.accelerator.print(f"pushed to {commit.commit_url}")
        self.accelerator.end_training()
        return result


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainArguments) -> dict:
    return PlumTrainer(model_args, data_args, args).train()
