"""`python -m partonomy_dataset build|export-qa|stats` — build a Hub-ready PARTONOMY folder (from a release's own
questions or generating them), write a built config's questions in the release's json format, or print statistics."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .builder import SOURCES, Partonomy
from .hub_folder import built_configs, check_output_folder, push_to_hub, statistics_table, write_config
from .mutation import DEFAULT_EMBEDDING_MODEL

DEFAULT_OUT = "partonomy"  # so that `load_dataset("partonomy", "core")` finds it from the working directory
BUILD_DIR_PREFIX = "partonomy-build-"  # the temporary cache folder of a build, in the system's temp folder
OWNER_FILE = "owner.pid"  # inside it: the pid of the build that owns it

logger = logging.getLogger("partonomy_dataset")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or no pid at all: leave its folder alone
    return True


def remove_stale_build_dirs(temp_dir=None, started: float | None = None) -> list[Path]:
    """Removes the temporary folders of builds that were killed (`kill -9` leaves no chance to clean up): those
    `partonomy-build-*` folders in `temp_dir` (default: the system's) last changed before `started` (default: now)
    whose owner, the pid in their `owner.pid`, is gone. A folder without an owner file, or whose owner still runs,
    is left alone. Returns the folders removed."""
    temp_dir = Path(temp_dir if temp_dir is not None else tempfile.gettempdir())
    started = time.time() if started is None else started
    removed = []
    for folder in sorted(temp_dir.glob(BUILD_DIR_PREFIX + "*")):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_mtime >= started:
                continue
            pid = int((folder / OWNER_FILE).read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue
        if pid <= 0 or pid == os.getpid() or _running(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        logger.warning("removed %s, left by a build (pid %d) that was killed", folder, pid)
    return removed


def build(args) -> int:
    check_output_folder(args.out)  # before the build, not after it
    remove_stale_build_dirs()
    with tempfile.TemporaryDirectory(prefix=BUILD_DIR_PREFIX) as cache_dir:
        (Path(cache_dir) / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
        builder = Partonomy(
            config_name=args.config,
            source_dir=args.source_dir,
            seed=args.seed,
            num_proc=args.num_proc,
            embedding_model=args.embedding_model,
            ontology_file=args.ontology,
            toy_num_images=args.toy_num_images,
            toy_image_size=args.toy_image_size,
            qa_json=args.qa_json,
            cache_dir=cache_dir,
        )
        builder.download_and_prepare()
        dataset = builder.as_dataset()
        if sum(len(split) for split in dataset.values()) == 0:
            raise ValueError(f"the {args.config} build produced no questions")
        target = write_config(args.out, args.config, dataset, builder.build_report)
        del dataset  # release the memory-mapped cache before the folder is removed
    report = builder.build_report
    print(f"wrote {target}")
    print(statistics_table(args.out))
    skipped = {**report["skipped_reading"], **report["skipped_questions"]}
    if skipped or report["bad_files"]:
        print(f"skipped: {skipped or 'nothing'}; bad files or records: {len(report['bad_files'])}")
    if args.push_to_hub:
        commit = push_to_hub(args.out, args.push_to_hub, private=args.private)
        print(f"pushed to {getattr(commit, 'commit_url', commit)}")
    return 0


def export_qa(args) -> int:
    import datasets

    from .released import export_qa as write_records

    folder = Path(args.folder)
    configs = built_configs(folder)
    if args.config not in configs:
        raise ValueError(f"{folder} has no built config {args.config!r} (it has {sorted(configs) or 'none'})")
    splits = list(configs[args.config]["statistics"])
    split = args.split or (splits[0] if len(splits) == 1 else None)
    if split not in splits:
        raise ValueError(f"choose --split among {splits} for config {args.config!r}")
    dataset = datasets.load_dataset(str(folder), args.config, split=split)
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    out = write_records(dataset, args.out, reference_fields_only=args.reference_fields_only)
    print(f"wrote {len(dataset)} questions to {out} (images in {out.parent / 'images'})")
    return 0


def stats(args) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    if not built_configs(folder):
        raise ValueError(f"{folder} holds no built PARTONOMY config (no data/<config>/partonomy_build.json)")
    print(statistics_table(folder))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partonomy_dataset", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build one config into a Hub-ready folder")
    b.add_argument("--config", required=True, choices=SOURCES)
    b.add_argument("--source-dir", help="the source release on disk (not needed for toy or with --qa-json)")
    b.add_argument(
        "--qa-json",
        action="append",
        metavar="[SPLIT=]FILE",
        help="a released question file (repeat for several splits); the config then holds those questions as "
        "released. PARTONOMY-Core's partonomy_qa_pairs.json in --source-dir is used without this flag",
    )
    b.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--num-proc", type=int, default=1)
    b.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    b.add_argument("--ontology", help="json ontology merged with the one read from the data")
    b.add_argument("--toy-num-images", type=int, default=1200)
    b.add_argument("--toy-image-size", type=int, default=128)
    b.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this dataset repository")
    b.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    e = commands.add_parser("export-qa", help="write a built config's questions in the released json format")
    e.add_argument("folder")
    e.add_argument("--config", required=True)
    e.add_argument("--split", help="default: the config's only split")
    e.add_argument("--out", required=True, help="the json file; images go to images/ beside it")
    e.add_argument(
        "--reference-fields-only",
        action="store_true",
        help="leave out our extra keys (id, object, object_category, comparison_object, bbox)",
    )
    s = commands.add_parser("stats", help="print the statistics table of a built folder")
    s.add_argument("folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"build": build, "export-qa": export_qa, "stats": stats}[args.command](args)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
