"""Where stage-1 training speed is lost (issue 18): samples/s of one training step of a converted stage-0-like PLUM (the
demo's kind of model: LoRA on LLaMA, heads and SAM's decoder trained as `plum_training.trainer.prepare_trainable` sets
them, SAM's image encoder frozen) against a baseline of batch 8, one process, 2 torch threads, SAM embeddings
recomputed every step, no `torch.compile`, λ_KL = 0.1; each variant changes one thing:

- batch size 4 / 16;
- 1 torch thread; 2 threads with `OMP_WAIT_POLICY=PASSIVE` (waiting OpenMP threads sleep instead of spinning);
- two gloo DDP processes with one thread each (`torch.distributed.run`, as `make demo` trains; the steady-state step
  time is measured inside the processes; samples/s counts both processes' batches), alone and with the cache;
- SAM embeddings from an `ImageEmbeddingCache` (warm: every timed image was encoded before the clock started, as in
  any epoch after the first);
- `torch.compile(dynamic=True)` of the heaviest modules (LLaMA, SAM's two-way decoder transformer): the per-step
  ratio, and the end-to-end ratio of samples trained in a `--run-seconds` run once compilation (with empty caches,
  as on a first run) and every recompilation are paid for;
- the KL teacher off (λ_KL = 0: no second LLaMA forward).

The cache, compile and KL changes are also measured at one thread, against the 1-thread variant: on a shared 2-core
machine a 2-thread step stalls whenever other work holds a core, which can hide their effect.

A step is the trainer's own (`PlumTrainer._micro_step` after the trainer's setup, plus collating the batch). Within
the process the variants take turns step by step (the order rotated every round) on the same batches; variants that
need processes of their own (DDP, an OpenMP setting) run once a round; each samples/s comes from the median step
time. The ratios are the result; absolute numbers depend on how busy the machine was (its load average is recorded).
Also prints where a step of the faster single-process setting goes (`profile_step.profile`, cache on).

    python benchmarks/bench_training_speed.py [--steps 4] [--rounds 3] [--run-seconds 180] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    ROOT,
    add_out_argument,
    converted_stage0,
    toy_dataset,
    write_results,
)

MAX_BATCH, DDP_PROCESSES = 16, 2
COMPILED_MODULES = ("LLaMA", "SAM decoder transformer")


@dataclass(frozen=True)
class Variant:
    label: str
    batch_size: int = 8
    threads: int = 2
    processes: int = 1
    cache: bool = False
    compile: bool = False
    kl_loss_weight: float = 0.1
    omp_wait_policy: str | None = None  # OMP_WAIT_POLICY, read when the process starts
    reference: str = "baseline"  # the variant this one differs from by one change

    @property
    def launch(self) -> tuple | None:
        """Variants that need processes of their own (several, or an OpenMP setting) run in a launch per round;
        `None`: this process."""
        if self.processes == 1 and self.omp_wait_policy is None:
            return None
        return (self.processes, self.threads, self.omp_wait_policy)

    @property
    def model_key(self) -> tuple:
        """Variants with equal keys share one model (batch size does not change the model; threads change a compiled
        one, whose kernels are generated for the thread count they were compiled at)."""
        return (self.cache, self.compile, self.kl_loss_weight, self.threads if self.compile else None)


BASELINE = Variant("baseline (batch 8, 1 process x 2 threads)", reference="")
ONE_THREAD = replace(BASELINE, label="1 thread", threads=1, reference="baseline")
VARIANTS = {
    "baseline": BASELINE,
    "batch_4": replace(BASELINE, label="batch 4", batch_size=4, reference="baseline"),
    "batch_16": replace(BASELINE, label="batch 16", batch_size=16, reference="baseline"),
    "threads_1": ONE_THREAD,
    # OpenMP threads that sleep instead of spinning while they wait: what decides 2 threads on a busy machine
    "passive_wait": replace(
        BASELINE, label="2 threads, OMP_WAIT_POLICY=PASSIVE", omp_wait_policy="PASSIVE", reference="baseline"
    ),
    "ddp_2x1": replace(ONE_THREAD, label="2 DDP processes x 1 thread", processes=DDP_PROCESSES),
    "cached": replace(BASELINE, label="SAM embeddings cached", cache=True, reference="baseline"),
    "compiled": replace(BASELINE, label="torch.compile", compile=True, reference="baseline"),
    "no_kl": replace(BASELINE, label="KL teacher off (λ_KL 0)", kl_loss_weight=0.0, reference="baseline"),
    # the same three changes at one thread, where a shared machine's other work does not stall the step
    "cached_1t": replace(
        ONE_THREAD, label="1 thread, SAM embeddings cached", cache=True, reference="threads_1"
    ),
    "compiled_1t": replace(ONE_THREAD, label="1 thread, torch.compile", compile=True, reference="threads_1"),
    "no_kl_1t": replace(
        ONE_THREAD, label="1 thread, KL teacher off (λ_KL 0)", kl_loss_weight=0.0, reference="threads_1"
    ),
    "ddp_2x1_cached": replace(
        ONE_THREAD,
        label="2 DDP processes x 1 thread, cached",
        processes=DDP_PROCESSES,
        cache=True,
        reference="ddp_2x1",
    ),
}


# ---------------------------------------------------------------------------------------------- one process's steps


def quiet_progress():
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def make_trainer(model: Path, data: Path, variant: Variant, rows: list, output_dir: str):
    """A `PlumTrainer` set up as `train()` sets it up (model prepared, optimizer, accelerator, embedding cache), its
    collator ready; with the cache, every row's image already encoded."""
    from plum_training.arguments import DataArguments, ModelArguments, TrainArguments
    from plum_training.data import Collator
    from plum_training.trainer import PlumTrainer

    overrides = json.dumps({"kl_loss_weight": variant.kl_loss_weight})
    trainer = PlumTrainer(
        ModelArguments(model_name_or_path=str(model), trust_remote_code=True, config_overrides=overrides),
        DataArguments(dataset=str(data), configs=["toy"]),
        TrainArguments(
            output_dir=output_dir,
            per_device_train_batch_size=variant.batch_size,
            gradient_accumulation_steps=1,
            max_steps=1_000_000,
            sam_embedding_cache=len(rows) if variant.cache else 0,
            mixed_precision="no",
            save_steps=0,
        ),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the parameter table
        trainer.setup()
    trainer.collator = Collator(trainer.processor, keep_images=trainer.embeddings is not None)
    trainer.model.train()
    if variant.cache:
        for start in range(0, len(rows), MAX_BATCH):
            batch = trainer.collator(rows[start : start + MAX_BATCH])
            trainer.embeddings.embeddings(batch["images"], batch["sam_pixel_values"])
    if variant.compile:
        base = trainer.accelerator.unwrap_model(trainer.model).get_base_model()
        # dynamic shapes from the start: sequence lengths, images per span and spans per batch change every step
        base.llava.model.language_model.compile(dynamic=True)
        base.sam_mask_decoder.transformer.compile(dynamic=True)
    return trainer


def chunk(rows: list, index: int, rank: int, batch_size: int) -> list:
    """The rows of timed step `index` on process `rank`: every variant sees the same rows at the same step (a smaller
    batch takes the first rows of a larger one's)."""
    start = (index * DDP_PROCESSES + rank) * MAX_BATCH
    return [rows[(start + i) % len(rows)] for i in range(batch_size)]


def run_steps(trainer, rows: list, first: int, count: int, rank: int, batch_size: int) -> list[float]:
    """Seconds of each of `count` training steps (collation + the trainer's micro-step), from step index `first`."""
    times = []
    for index in range(first, first + count):
        started = time.perf_counter()
        trainer._micro_step(trainer.collator(chunk(rows, index, rank, batch_size)))
        times.append(time.perf_counter() - started)
    return times


def load_rows(data: Path) -> list:
    import datasets

    return list(datasets.load_dataset(str(data), "toy", split="train"))


# ---------------------------------------------------------------------------------------------- other processes


def worker(spec_file: str):
    """In a launch of its own (one process, or each rank under `torch.distributed.run`): every listed variant's steps
    of one round; a file per rank into the spec's folder."""
    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(spec["threads"])
    quiet_progress()
    rows = load_rows(Path(spec["data"]))
    result, rank = {}, 0
    for key in spec["variants"]:
        variant = VARIANTS[key]
        # the trainer's Accelerator sets up the process group (ACCELERATE_USE_CPU: gloo); a PartialState made before it
        # would not see the CPU flag and stay single-process
        trainer = make_trainer(Path(spec["model"]), Path(spec["data"]), variant, rows, spec["output_dir"])
        rank = trainer.accelerator.process_index
        if trainer.accelerator.num_processes != spec["processes"]:
            raise RuntimeError(
                f"expected {spec['processes']} processes, got {trainer.accelerator.num_processes}"
            )
        run_steps(trainer, rows, spec["warmup_first"], spec["warmup"], rank, variant.batch_size)
        result[key] = run_steps(trainer, rows, spec["first"], spec["steps"], rank, variant.batch_size)
        del trainer
    Path(spec["output_dir"], f"rank{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launch(keys: list[str], model: Path, data: Path, first: int, steps: int, warmup: int) -> dict:
    """One round of `keys` (which share `Variant.launch`) in processes of their own: gloo DDP processes under
    `torch.distributed.run` as `make demo` launches them, or one process with its OpenMP settings. Per variant, each
    step's time as the slowest rank's (the ranks wait for each other in every backward)."""
    processes, threads, wait_policy = VARIANTS[keys[0]].launch
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as folder:
        spec = {
            "variants": keys,
            "model": str(model),
            "data": str(data),
            "first": first,
            "steps": steps,
            "warmup": warmup,
            "warmup_first": 10_000 + first,  # rows no timed step uses
            "output_dir": folder,
            "processes": processes,
            "threads": threads,
        }
        spec_file = Path(folder) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        command = [sys.executable]
        if processes > 1:
            command += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
            command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        command += [str(Path(__file__).resolve()), "--worker", str(spec_file)]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": str(threads),
            "ACCELERATE_USE_CPU": "true",
        }
        if wait_policy:
            env["OMP_WAIT_POLICY"] = wait_policy
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the launch of {keys} failed:\n{done.stderr[-4000:]}")
        ranks = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(processes)]
    return {key: [max(times) for times in zip(*(rank[key] for rank in ranks))] for key in keys}


# ---------------------------------------------------------------------------------------------- the measurement


def measure(args, model: Path, data: Path, keys: list[str]) -> tuple[dict, dict, list]:
    """Every variant's step times: warm-up steps (compilation included) and timed steps. Within a process the variants
    take turns step by step (A B C A B C …, the order rotated every round); variants in processes of their own (DDP,
    OpenMP settings) run once a round."""
    rows = load_rows(data)
    local = [k for k in keys if VARIANTS[k].launch is None]
    launches = {}
    for key in keys:
        if VARIANTS[key].launch is not None:
            launches.setdefault(VARIANTS[key].launch, []).append(key)
    trainers, warmup_times, timed = {}, {}, {k: [] for k in keys}
    folder = tempfile.mkdtemp(prefix="bench-training-")
    for key in local:
        variant = VARIANTS[key]
        torch.set_num_threads(variant.threads)
        if variant.model_key not in trainers:
            trainers[variant.model_key] = make_trainer(model, data, variant, rows, folder)
        # warm-up on rows of its own; a compiled model compiles here (its first variant to run pays)
        count = args.compile_warmup if variant.compile else 1
        warmup_times[key] = run_steps(trainers[variant.model_key], rows, 10_000, count, 0, variant.batch_size)
    loads = []
    for round_index in range(args.rounds):
        shift = round_index % len(local)
        order = local[shift:] + local[:shift]
        for step in range(round_index * args.steps, (round_index + 1) * args.steps):
            for key in order:
                variant = VARIANTS[key]
                torch.set_num_threads(variant.threads)
                timed[key] += run_steps(trainers[variant.model_key], rows, step, 1, 0, variant.batch_size)
        for group in launches.values():
            for key, times in run_launch(group, model, data, round_index * args.steps, args.steps, 1).items():
                timed[key] += times
        loads.append(round(os.getloadavg()[0], 2))
        print(f"  round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return timed, warmup_times, loads


def summarise(timed: dict, warmup_times: dict, run_seconds: float) -> dict:
    results = {}
    for key, times in timed.items():
        variant = VARIANTS[key]
        median = statistics.median(times)
        results[key] = {
            **asdict(variant),
            "median_step_s": median,
            "samples_per_s": variant.batch_size * variant.processes / median,
            "step_times_s": [round(t, 4) for t in times],
            "warmup_step_times_s": [round(t, 4) for t in warmup_times.get(key, [])],
        }
    base = results["baseline"]["samples_per_s"]
    for result in results.values():
        result["ratio"] = result["samples_per_s"] / base
        reference = results.get(result["reference"])
        result["vs_reference"] = result["samples_per_s"] / reference["samples_per_s"] if reference else None
    compiled = [k for k in ("compiled", "compiled_1t") if k in results and VARIANTS[k].reference in results]
    compile_summary = None
    if compiled:
        # a run compiles once, with empty caches: the first compiled model's warm-up is that cost (a second model's
        # compilation finds some of the work in memory), charged to every compiled variant
        cold = max(warmup_overhead(results, k) for k in compiled)
        compile_summary = {
            "modules": list(COMPILED_MODULES),
            "compile_seconds": cold,
            "run_seconds": run_seconds,
            **{k: end_to_end(results, timed, k, cold, run_seconds) for k in compiled},
        }
    shares = {}
    for name, change in (("kl_teacher", "no_kl"), ("sam_image_encoder", "cached")):
        for suffix in ("", "_1t"):
            key = change + suffix
            if key in results and VARIANTS[key].reference in results:
                reference = results[VARIANTS[key].reference]
                shares.setdefault(name, {})[VARIANTS[key].reference] = (
                    1 - results[key]["median_step_s"] / reference["median_step_s"]
                )
    return {"variants": results, "compile": compile_summary, "step_share": shares}


def warmup_overhead(results: dict, key: str) -> float:
    """What a variant's warm-up steps took beyond its steady (median) step time: compilation, for a compiled model."""
    warmup = results[key]["warmup_step_times_s"]
    return max(0.0, sum(warmup) - len(warmup) * results[key]["median_step_s"])


def end_to_end(results: dict, timed: dict, key: str, compiling: float, run_seconds: float) -> dict:
    """A compiled variant against its reference over a `run_seconds` run: the compiled run first pays `compiling`, the
    other its own warm-up; then each trains at its mean step time (which, unlike the median, includes recompilations
    on new batch shapes)."""
    reference = VARIANTS[key].reference

    def rate(name):
        variant = VARIANTS[name]
        return variant.batch_size * variant.processes / statistics.mean(timed[name])

    warming = warmup_overhead(results, reference)
    trained = max(0.0, run_seconds - compiling) * rate(key)
    trained_plain = max(0.0, run_seconds - warming) * rate(reference)
    ratio = rate(key) / rate(reference)
    return {
        "reference": reference,
        "own_warmup_seconds": warmup_overhead(results, key),
        "reference_warmup_seconds": warming,
        "per_step_ratio": results[key]["vs_reference"],
        "mean_step_ratio": ratio,
        "end_to_end_ratio": trained / trained_plain if trained_plain else None,
        # the run length from which compiling pays: (T - compiling) * ratio = T - warming
        "break_even_seconds": (compiling * ratio - warming) / (ratio - 1) if ratio > 1 else None,
    }


def speed_table(variants: dict) -> str:
    lines = [
        f"{'variant':<42} {'s/step':>7} {'samples/s':>9} {'vs baseline':>11}  vs the same without the change"
    ]
    for result in variants.values():
        against = ""
        if result["vs_reference"] is not None and result["reference"] != "baseline":
            against = f"{result['vs_reference']:.2f}x {VARIANTS[result['reference']].label}"
        lines.append(
            f"{result['label']:<42} {result['median_step_s']:>7.3f} {result['samples_per_s']:>9.2f} "
            f"{result['ratio']:>10.2f}x  {against}"
        )
    return "\n".join(lines)


def best_single_process_profile(args, model: Path, data: Path, variants: dict) -> dict:
    """`profile_step.profile` of the converted model with the cache on, batch 8, at the faster thread count."""
    from benchmarks.profile_step import components, profile, table
    from plum_training import trainer
    from plum_training.arguments import ModelArguments
    from plum_training.embedding_cache import ImageEmbeddingCache
    from plum_training.loading import load_model_and_processor

    threads = 1 if variants.get("threads_1", {}).get("ratio", 0) > 1 else BASELINE.threads
    torch.set_num_threads(threads)
    rows = load_rows(data)
    plum, processor = load_model_and_processor(str(model), trust_remote_code=True)
    embeddings = ImageEmbeddingCache(plum, capacity=len(rows))
    plum = trainer.prepare_trainable(plum, ModelArguments())
    per_step, speed = profile(plum, processor, rows, args.profile_steps, BASELINE.batch_size, embeddings)
    print(
        f"\nwhere a step goes: converted stage-0 model, batch {BASELINE.batch_size}, {threads} thread(s), SAM "
        f"embeddings cached, {args.profile_steps} steps"
    )
    print(table(per_step, speed, BASELINE.batch_size))
    return {
        "threads": threads,
        "batch_size": BASELINE.batch_size,
        "steps": args.profile_steps,
        "steps_per_s": speed,
        "samples_per_s": speed * BASELINE.batch_size,
        "ms_per_step": {k: 1000 * v for k, v in components(per_step).items()},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the variants take turns")
    parser.add_argument("--compile-warmup", type=int, default=3, help="untimed steps of the compiled variant")
    parser.add_argument(
        "--run-seconds", type=float, default=180.0, help="the run length compile's end-to-end ratio is for"
    )
    parser.add_argument("--profile-steps", type=int, default=10, help="steps of the per-component profile")
    parser.add_argument("--toy-images", type=int, default=200)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (minutes of compilation)"
    )
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="skip the variants that need processes of their own (DDP, OpenMP settings)",
    )
    parser.add_argument(
        "--variants",
        help=f"comma-separated variants to measure besides the baseline (default: all of {', '.join(VARIANTS)})",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_out_argument(parser, __file__)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    quiet_progress()
    data, model = toy_dataset(args.toy_images), converted_stage0()
    chosen = set(args.variants.split(",")) if args.variants else set(VARIANTS)
    if chosen - set(VARIANTS):
        parser.error(f"unknown variants {sorted(chosen - set(VARIANTS))}: choose from {', '.join(VARIANTS)}")
    keys = [
        k
        for k, v in VARIANTS.items()
        if (k == "baseline" or k in chosen)
        and not (args.no_compile and v.compile)
        and not (args.in_process_only and v.launch is not None)
    ]
    if any(VARIANTS[k].compile for k in keys):
        # a first run's compilation: empty inductor caches, not an earlier run's
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    load_before = round(os.getloadavg()[0], 2)
    timed, warmup_times, loads = measure(args, model, data, keys)
    results = summarise(timed, warmup_times, args.run_seconds)
    variants = results["variants"]
    print(
        f"training speed, converted stage-0 model, toy set ({args.toy_images} images), median of "
        f"{args.rounds} x {args.steps} interleaved steps; 1-minute load average {load_before} → {loads}"
    )
    print("baseline: batch 8, 1 process x 2 threads, SAM embeddings recomputed, no compile, λ_KL 0.1")
    print(speed_table(variants))
    if results["compile"]:
        c = results["compile"]
        print(
            f"torch.compile of {' and '.join(c['modules'])}: {c['compile_seconds']:.0f} s compiling (empty caches)"
        )
        for key in ("compiled", "compiled_1t"):
            if key in c:
                e = c[key]
                whole = "none" if e["end_to_end_ratio"] is None else f"{e['end_to_end_ratio']:.2f}x"
                print(
                    f"  {VARIANTS[key].label}: per step {e['per_step_ratio']:.2f}x {VARIANTS[e['reference']].label} "
                    f"(median; {e['mean_step_ratio']:.2f}x by the mean, recompilations included); a "
                    f"{c['run_seconds']:.0f} s run trains {whole} its samples"
                )
    for name, shares in results["step_share"].items():
        listed = ", ".join(f"{100 * share:.0f} % of {VARIANTS[k].label}'s" for k, share in shares.items())
        print(f"share of a step: {name.replace('_', ' ')} {listed}")
    results["profile"] = best_single_process_profile(args, model, data, variants)
    settings = {
        "model": "converted stage-0 (Stage0Settings.quick(), convert --llava --sam, float32, demo heads)",
        "toy_images": args.toy_images,
        "steps": args.steps,
        "rounds": args.rounds,
        "compile_warmup": args.compile_warmup,
        "run_seconds": args.run_seconds,
        "baseline": asdict(BASELINE),
        "load_average_1min_before": load_before,
        "load_average_1min_per_round": loads,
    }
    return write_results(args.out, settings, results)


if __name__ == "__main__":
    main()
