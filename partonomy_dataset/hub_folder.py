"""The Hub-ready folder: parquet shards under `data/<config>/`, a dataset card whose YAML `configs:` lists
every config built into the folder, statistics in the columns of the paper's Table 1 / 8, and the upload."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import datasets

from . import atomic, templates
from .builder import DESCRIPTIONS

logger = logging.getLogger(__name__)

BUILD_INFO = "partonomy_build.json"
RETIRED = re.compile(
    r"\.(.+)\.[0-9a-f]+\.old"
)  # `.<config>.<hex>.old`: a config moved aside by an older build
MAX_SHARD_BYTES = 500 * 1024 * 1024
STAT_COLUMNS = (
    "# Object Labels",
    "# Part Labels",
    "# Object-Part Labels",
    "# Images",
    "# Seg. Masks",
    "# Questions",
)


def statistics(dataset: datasets.Dataset) -> dict[str, int]:
    """Table 1 / 8 columns for one split (masks counted once per image, object and part)."""
    columns = dataset.select_columns(["image_id", "object", "parts"]).to_dict()
    objects, parts, object_parts, images, masks = set(), set(), set(), set(), set()
    for image_id, obj, names in zip(columns["image_id"], columns["object"], columns["parts"]):
        objects.add(obj)
        images.add(image_id)
        for part in names:
            parts.add(part)
            object_parts.add((obj, part))
            masks.add((image_id, obj, part))
    values = (len(objects), len(parts), len(object_parts), len(images), len(masks), len(dataset))
    return dict(zip(STAT_COLUMNS, values))


def check_output_folder(folder):
    """Fails early, naming `folder`, when a build could not write there (a file in the way, no permission)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder} exists and is not a folder")
    try:
        (folder / "data").mkdir(parents=True, exist_ok=True)
        probe = folder / "data" / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write the dataset into --out {folder}: {error}") from None


def _report_files(config_dir: Path) -> set[str] | None:
    """The shard names a config folder's report lists when the build is whole (report readable, every shard there);
    None otherwise."""
    try:
        files = json.loads((config_dir / BUILD_INFO).read_text(encoding="utf-8"))["files"]
        names = {name for split_names in files.values() for name in split_names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return names if all((config_dir / name).is_file() for name in names) else None


def _card_files(folder: Path, config_name: str) -> set[str]:
    """The shard names the card (what `load_dataset` reads) lists for a config."""
    try:
        card = (folder / "README.md").read_text(encoding="utf-8")
    except OSError:
        return set()
    return set(re.findall(rf"data/{re.escape(config_name)}/([^\s/]+\.parquet)", card))


def _restore_retired(folder: Path, old: Path) -> str:
    """A `.x.old` folder (the previous data, moved aside by builds of earlier versions during their swap): removed
    when its config has a whole replacement that the card lists, else restored in place of the half-swapped folder
    (an `.old` that is not whole itself holds nothing to restore and is removed)."""
    target = folder / "data" / RETIRED.fullmatch(old.name).group(1)
    replacement = _report_files(target)
    replaced = replacement is not None and replacement <= _card_files(folder, target.name)
    if replaced or _report_files(old) is None:
        shutil.rmtree(old, ignore_errors=True)
        return f"removed {old.name}"
    if target.exists():
        half = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        target.replace(half)
        shutil.rmtree(half, ignore_errors=True)
    old.replace(target)
    return f"restored {target.name} from {old.name}"


def _settle(folder: Path, config_dir: Path) -> list[str]:
    """Finishes what a build killed inside `_swap_in` left in a config folder: a whole report that the card does not
    list yet gets its card; shard files that neither the report nor the card lists are removed."""
    listed = _report_files(config_dir)
    if listed is None:
        return []  # nothing to vouch for: left as it is
    done = []
    if not listed <= _card_files(folder, config_dir.name):
        try:
            write_card(folder)
            done.append(f"wrote the card for {config_dir.name}")
        except Exception as error:  # a report the card cannot be made from: leave everything in place
            logger.warning("could not write the card of %s: %s", folder, error)
            return []
    keep = listed | _card_files(folder, config_dir.name)
    for shard in sorted(config_dir.glob("*.parquet")):
        if shard.name not in keep:
            shard.unlink()
            done.append(f"removed {config_dir.name}/{shard.name}")
    return done


def remove_stale_partials(folder) -> list[str]:
    """Cleans up after builds that were killed (`kill -9`) before they finished, and returns (and logs) what it did:
    a staging folder (`.x.partial`) is removed, a retired folder (`.x.old`) is restored or removed
    (`_restore_retired`), and each config folder is settled (`_settle`). Nothing the card lists is ever removed."""
    folder = Path(folder)
    data, done = folder / "data", []
    for stale in sorted(data.glob(".*.partial")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            done.append(f"removed {stale.name}")
    for old in sorted(data.glob(".*.old")):
        if old.is_dir() and RETIRED.fullmatch(old.name):
            done.append(_restore_retired(folder, old))
    for config_dir in sorted(data.iterdir()) if data.is_dir() else []:
        if config_dir.is_dir() and not config_dir.name.startswith("."):
            done += _settle(folder, config_dir)
    for line in done:
        logger.warning("%s: %s, left by a build that did not finish", data, line)
    return done


def _write_shards(staging: Path, config_name: str, dataset: datasets.DatasetDict, report: dict):
    """The config's parquet shards (content-addressed names) and its build report, written into `staging`."""
    split_stats, split_files = {}, {}
    for split, split_data in dataset.items():
        num_shards = max(1, -(-split_data.data.nbytes // MAX_SHARD_BYTES))
        split_files[str(split)] = []
        for index in range(num_shards):
            shard = split_data.shard(num_shards, index, contiguous=True)
            written = staging / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            shard.to_parquet(str(written))
            # Content-addressed names, listed one by one in the card: `datasets` caches a local folder by its
            # YAML (not by its files), so a rebuild under the same names would load the old cached copy.
            digest = hashlib.sha256(written.read_bytes()).hexdigest()[:12]
            named = written.with_name(f"{split}-{index:05d}-of-{num_shards:05d}-{digest}.parquet")
            written.rename(named)
            split_files[str(split)].append(named.name)
        split_stats[str(split)] = statistics(split_data)
    info = {
        "config": config_name,
        "statistics": split_stats,
        "files": split_files,
        "examples": _examples(dataset),
        **report,
    }
    (staging / BUILD_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")


def _swap_in(folder: Path, target: Path, staging: Path, card: str):
    """Makes the staged config the one `load_dataset` reads, keeping a loadable folder at every instant: the new
    shards (content-addressed names, so they never replace an old one of other content) are moved in beside the old
    ones, then the report, then the card that lists them (the moment the new data becomes the data), and only then
    are the old shards removed. An error on the way puts the old report back and removes the new shards; a kill leaves
    a state `remove_stale_partials` settles."""
    target.mkdir(exist_ok=True)
    new = _report_files(staging)
    old = {shard.name for shard in target.glob("*.parquet")}
    previous = (target / BUILD_INFO).read_bytes() if (target / BUILD_INFO).is_file() else None
    moved = []
    try:
        for name in sorted(new - old):
            os.replace(staging / name, target / name)
            moved.append(name)
        os.replace(staging / BUILD_INFO, target / BUILD_INFO)
        atomic.write_text(folder / "README.md", card)
    except BaseException:
        if previous is None:
            (target / BUILD_INFO).unlink(missing_ok=True)
        else:
            atomic.write_bytes(target / BUILD_INFO, previous)
        for name in moved:
            (target / name).unlink(missing_ok=True)
        raise
    for name in sorted(old - new):
        (target / name).unlink(missing_ok=True)


def write_config(folder, config_name: str, dataset: datasets.DatasetDict, report: dict) -> Path:
    """Writes one config's parquet shards (and its build report) into `folder/data/<config>/` and the card that lists
    them, atomically: everything is staged and the card text made first (a failure there leaves the folder as it
    was), then swapped in by `_swap_in`. What killed builds left is settled first (`remove_stale_partials`)."""
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    target = folder / "data" / config_name
    staging = folder / "data" / f".{config_name}.{uuid.uuid4().hex}.partial"
    staging.mkdir()
    try:
        _write_shards(staging, config_name, dataset, report)
        card = card_text(folder, staged={config_name: staging})
        _swap_in(folder, target, staging, card)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # emptied by the swap, or what a failure left
    return target


def _examples(dataset: datasets.DatasetDict) -> dict[str, dict]:
    """One example question per type, for the card."""
    examples = {}
    for split_data in dataset.values():
        columns = split_data.select_columns(
            [
                "question_type",
                "object",
                "question",
                "answer_choices",
                "correct_index",
                "object_question",
                "object_answer_choices",
                "object_correct_index",
            ]
        )
        for row in columns:
            examples.setdefault(row["question_type"], row)
    return examples


def built_configs(folder, staged: dict[str, Path] | None = None) -> dict[str, dict]:
    """config name → its build report, for every config built into `folder`; `staged` (config → staging folder) stands
    in for those configs' folders (the card of a build is made before the build is swapped in)."""
    reports = {
        info.parent.name: info
        for info in Path(folder).glob(f"data/*/{BUILD_INFO}")
        if not info.parent.name.startswith(".")  # staging and retired folders of builds in progress
    }
    reports.update({name: Path(path) / BUILD_INFO for name, path in (staged or {}).items()})
    return {name: json.loads(reports[name].read_text(encoding="utf-8")) for name in sorted(reports)}


def statistics_table(folder, staged: dict[str, Path] | None = None) -> str:
    """The statistics of every config and split, as a Markdown table."""
    lines = [
        "| config | split | " + " | ".join(STAT_COLUMNS) + " |",
        "|---|---|" + "---:|" * len(STAT_COLUMNS),
    ]
    for name, info in built_configs(folder, staged).items():
        for split, stats in info["statistics"].items():
            lines.append(f"| {name} | {split} | " + " | ".join(f"{stats[c]:,}" for c in STAT_COLUMNS) + " |")
    return "\n".join(lines)


def _yaml_configs(configs: dict[str, dict]) -> str:
    lines = ["configs:"]
    for name, info in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in info["statistics"]:
            files = info.get("files", {}).get(split) or [f"{split}-*"]
            lines += [f"  - split: {split}", "    path:"] + [f"    - data/{name}/{file}" for file in files]
    return "\n".join(lines)


def _example_block(row: dict) -> str:
    correct = row["answer_choices"][row["correct_index"]]
    lines = [f"- Q: {row['question']}", f"  - correct: {correct}"]
    wrong = [c for i, c in enumerate(row["answer_choices"]) if i != row["correct_index"]]
    lines.append(f"  - a wrong choice: {wrong[0]}")
    if row.get("object_question"):
        lines.append(
            f"  - object question: {row['object_question']} → "
            f"{row['object_answer_choices'][row['object_correct_index']]}"
        )
    return "\n".join(lines)


def card_text(folder, staged: dict[str, Path] | None = None) -> str:
    """The dataset card for every config built into `folder` (with `staged` standing in, see `built_configs`): the
    fixed text of `dataset_card.md` filled in with this build's configs, examples, question sets and statistics."""
    configs = built_configs(folder, staged)
    examples = {}
    for info in configs.values():
        for question_type, row in info.get("examples", {}).items():
            examples.setdefault(question_type, row)
    example_lines = "\n".join(
        f"**{qt}**\n\n{_example_block(examples[qt])}\n" for qt in templates.QUESTION_TYPES if qt in examples
    )
    skipped = "\n".join(
        f"- `{name}`: {info['instances']:,} instances; skipped while reading: {info['skipped_reading'] or 'nothing'};"
        f" bad files or records: {len(info['bad_files'])}; questions not asked: {info['skipped_questions'] or 'none'}"
        for name, info in configs.items()
    )
    question_sets = "\n".join(f"- `{name}`: {_question_set(info)}" for name, info in configs.items())
    descriptions = "\n".join(f"- `{name}`: {DESCRIPTIONS.get(name, name)}" for name in configs)
    template = (Path(__file__).parent / "dataset_card.md").read_text(encoding="utf-8")
    return template.format(
        yaml_configs=_yaml_configs(configs),
        descriptions=descriptions,
        example_lines=example_lines,
        question_sets=question_sets,
        statistics=statistics_table(folder, staged),
        skipped=skipped,
    )


def _question_set(info: dict) -> str:
    question_set = info.get("question_set") or {"kind": "generated", "seed": "?"}
    if question_set["kind"] == "released":
        files = ", ".join(f"`{file}` ({split})" for split, file in question_set["files"].items())
        return f"released questions, loaded as released from {files}"
    return f"generated by `partonomy_dataset` with seed {question_set['seed']}"


def write_card(folder):
    atomic.write_text(Path(folder) / "README.md", card_text(folder))


def push_to_hub(
    folder, repo_id: str, private: bool = False, token: str | None = None, endpoint: str | None = None
):
    """Uploads the folder as a dataset repository; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Build PARTONOMY configs",
        ignore_patterns=["data/.*"],
    )
