"""`python -m partonomy_dataset build|stats` — build a Hub-ready PARTONOMY folder, or print its statistics."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from .builder import SOURCES, Partonomy
from .hub_folder import push_to_hub, statistics_table, write_config
from .mutation import DEFAULT_EMBEDDING_MODEL

DEFAULT_OUT = "partonomy"  # so that `load_dataset("partonomy", "core")` finds it from the working directory


def build(args) -> int:
    with tempfile.TemporaryDirectory(prefix="partonomy-build-") as cache_dir:
        builder = Partonomy(
            config_name=args.config,
            source_dir=args.source_dir,
            seed=args.seed,
            num_proc=args.num_proc,
            embedding_model=args.embedding_model,
            ontology_file=args.ontology,
            toy_num_images=args.toy_num_images,
            toy_image_size=args.toy_image_size,
            cache_dir=cache_dir,
        )
        builder.download_and_prepare()
        dataset = builder.as_dataset()
        target = write_config(args.out, args.config, dataset, builder.build_report)
        del dataset  # release the memory-mapped cache before the folder is removed
    print(f"wrote {target}")
    print(statistics_table(args.out))
    if args.push_to_hub:
        commit = push_to_hub(args.out, args.push_to_hub, private=args.private)
        print(f"pushed to {getattr(commit, 'commit_url', commit)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partonomy_dataset", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build one config into a Hub-ready folder")
    b.add_argument("--config", required=True, choices=SOURCES)
    b.add_argument("--source-dir", help="the source release on disk (not needed for toy)")
    b.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--num-proc", type=int, default=1)
    b.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    b.add_argument("--ontology", help="json ontology merged with the one read from the data")
    b.add_argument("--toy-num-images", type=int, default=1200)
    b.add_argument("--toy-image-size", type=int, default=128)
    b.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this dataset repository")
    b.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    s = commands.add_parser("stats", help="print the statistics table of a built folder")
    s.add_argument("folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            return build(args)
        print(statistics_table(args.folder))
        return 0
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
