"""`datasets.GeneratorBasedBuilder` for PARTONOMY: one config per source, usable directly
(`Partonomy(config_name="toy").download_and_prepare()`), and the engine behind `python -m partonomy_dataset build`.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from . import released
from .instances import Instance, ReadStats
from .mutation import DEFAULT_EMBEDDING_MODEL
from .questions import Ontology, build_questions, split_images
from .sources import core, paco, partimagenet, pascal_part, toy

logger = logging.getLogger(__name__)

SOURCES = ("core", "paco", "partimagenet", "pascal_part", "toy", "custom")
EVALUATION_ONLY = ("core",)  # PARTONOMY-Core is never trained on: a single test split

_CITATION = """\
@article{blume2025partonomy,
  title={PARTONOMY: Large Multimodal Models with Part-Level Visual Understanding},
  author={Blume, Ansel and Kim, Jeonghwan and Ha, Hyeonjeong and Chatikyan, Elen and Jin, Xiaomeng and
          Nguyen, Khanh Duy and Peng, Nanyun and Chang, Kai-Wei and Hoiem, Derek and Ji, Heng},
  journal={arXiv preprint arXiv:2505.20759},
  year={2025}
}
"""

DESCRIPTIONS = {
    "core": "PARTONOMY-Core: object-centric images of specialised objects (evaluation only).",
    "paco": "PARTONOMY-PACO: questions generated from PACO-LVIS part annotations.",
    "partimagenet": "PARTONOMY-PartImageNet: questions generated from PartImageNet part annotations.",
    "pascal_part": "PARTONOMY-PASCAL Part: questions generated from Pascal-Part annotations.",
    "toy": "A procedurally drawn toy set with exact part masks, for CPU tests and demos.",
    "custom": (
        "Questions generated from your own part annotations: COCO-style json in PACO's layout (object categories "
        "`object`, part categories `object:part`, part annotations linked to their object by `obj_ann_id`), "
        "images beside the json (docs/finetune-your-parts.md)."
    ),
}

MASK = {"size": datasets.List(datasets.Value("int32")), "counts": datasets.Value("string")}
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "object": datasets.Value("string"),
        "object_category": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "released_question_type": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer_choices": datasets.List(datasets.Value("string")),
        "answer_parts": datasets.List(datasets.List(datasets.Value("string"))),
        "correct_index": datasets.Value("int32"),
        "comparison_object": datasets.Value("string"),
        "object_question": datasets.Value("string"),
        "object_answer_choices": datasets.List(datasets.Value("string")),
        "object_correct_index": datasets.Value("int32"),
        "parts": datasets.List(datasets.Value("string")),
        "masks": datasets.List(MASK),
        "bbox": datasets.List(datasets.Value("float32")),
    }
)


class PartonomyConfig(datasets.BuilderConfig):
    """Args:
    source_dir: the source release on disk (not needed for `toy`); for `custom`, the folder of your own
        PACO-layout json and its images.
    seed: drives question sampling, mutations, choice order and the split (default 42).
    num_proc: worker processes for question generation and co-occurrence fitting.
    embedding_model: sentence-transformers model for wrong objects (default: the offline all-MiniLM-L6-v2).
    ontology_file: optional json `{"objects": {object: {"category": str, "parts": [str]}}}` merged in.
    toy_num_images, toy_image_size: size of the `toy` set.
    qa_json: released question files, `[SPLIT=]FILE` each (see `released.qa_files`): the config then holds those
        questions as released instead of generating its own. PARTONOMY-Core's `partonomy_qa_pairs.json` in
        `source_dir` is used without being named.
    """

    def __init__(
        self,
        *,
        source_dir: str | None = None,
        seed: int = 42,
        num_proc: int = 1,
        embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        ontology_file: str | None = None,
        toy_num_images: int = 1200,
        toy_image_size: int = toy.DEFAULT_IMAGE_SIZE,
        qa_json: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.name not in SOURCES:
            raise ValueError(f"unknown PARTONOMY config {self.name!r}; choose one of {SOURCES}")
        self.source_dir = None if source_dir is None else str(source_dir)
        self.seed = seed
        self.num_proc = num_proc
        self.embedding_model = embedding_model
        self.ontology_file = ontology_file
        self.toy_num_images = toy_num_images
        self.toy_image_size = toy_image_size
        self.qa_json = list(qa_json) if qa_json else None


def read_source(config: PartonomyConfig, toy_dir: str | os.PathLike) -> tuple[list[Instance], ReadStats]:
    """The config's instances (one per object class per image) and what was skipped reading them."""
    stats = ReadStats()
    if config.name == "toy":
        if config.toy_num_images <= 0:
            raise ValueError(f"toy_num_images must be positive, got {config.toy_num_images}")
        return toy.generate(toy_dir, config.toy_num_images, config.seed, config.toy_image_size), stats
    if config.source_dir is None:
        raise ValueError(f"config {config.name!r} needs source_dir (the {config.name} release on disk)")
    source_dir = Path(config.source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"source_dir does not exist: {source_dir}")
    readers = {
        "core": core.read_dir,
        "paco": paco.read_dir,
        "partimagenet": partimagenet.read_dir,
        "pascal_part": pascal_part.read_dir,
        "custom": functools.partial(paco.read_dir, source="custom"),  # your own annotations, in PACO's layout
    }
    instances = readers[config.name](source_dir, stats)
    if not instances:
        raise ValueError(
            f"no usable instances in {source_dir} ({len(stats.bad_files)} bad files: {stats.bad_files[:3]})"
        )
    return instances, stats


def image_record(instance: Instance) -> dict:
    """The image as stored in the dataset: its file bytes, with the disambiguation box drawn when set."""
    path = Path(instance.image_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    if instance.bbox is None:
        return {"bytes": data, "path": path.name}
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        x, y, w, h = instance.bbox
        width = max(2, round(max(image.size) / 150))
        ImageDraw.Draw(image).rectangle([x, y, x + w, y + h], outline=(255, 0, 0), width=width)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": path.stem + ".png"}


def make_example(row: dict, instance: Instance) -> dict:
    example = {k: v for k, v in row.items() if k != "instance"}
    example.update(
        id=row["id"],  # set by `_split_generators`, unique
        source=instance.source,
        released_question_type=None,
        image=image_record(instance),
        image_id=instance.image_id,
        width=instance.width,
        height=instance.height,
        object=instance.object,
        object_category=instance.category,
        masks=[instance.parts[p] for p in row["parts"]],
        bbox=instance.bbox,
    )
    return example


class Partonomy(datasets.GeneratorBasedBuilder):
    """PARTONOMY (Blume, Kim et al., 2025): explanatory part segmentation questions with five answer choices
    and ground-truth part masks."""

    BUILDER_CONFIG_CLASS = PartonomyConfig
    BUILDER_CONFIGS = [PartonomyConfig(name=name, description=DESCRIPTIONS[name]) for name in SOURCES]
    DEFAULT_CONFIG_NAME = "toy"
    VERSION = datasets.Version("1.0.0")

    def _info(self):
        return datasets.DatasetInfo(
            description=DESCRIPTIONS[self.config.name],
            features=FEATURES,
            citation=_CITATION,
            homepage="https://arxiv.org/abs/2505.20759",
        )

    def _split_generators(self, dl_manager):
        config = self.config
        files = released.qa_files(config.name, config.source_dir, config.qa_json)
        if files:
            return self._released_split_generators(files)
        toy_dir = (
            Path(self._cache_dir_root)
            / "partonomy_toy_images"
            / (f"seed{config.seed}-n{config.toy_num_images}-px{config.toy_image_size}")
        )
        instances, read_stats = read_source(config, toy_dir)
        extra = None
        if config.ontology_file:
            with open(config.ontology_file, encoding="utf-8") as f:
                extra = json.load(f)
        rows, skipped, ontology = build_questions(
            instances, config.seed, config.embedding_model, config.num_proc, ontology_extra=extra
        )
        self.build_report = {
            "question_set": {"kind": "generated", "seed": config.seed},
            "instances": len(instances),
            "bad_files": read_stats.bad_files,
            "skipped_reading": dict(read_stats.skipped),
            "skipped_questions": dict(skipped),
            "ontology": ontology.to_dict(),
        }
        if config.name in EVALUATION_ONLY:
            split_of = dict.fromkeys((i.image_id for i in instances), datasets.Split.TEST)
        elif all(i.split for i in instances):  # the source's own split (VLPart's train.json / val.json)
            split_of = {i.image_id: i.split for i in instances}
        else:
            split_of = split_images([i.image_id for i in instances], config.seed)
        ids = released.unique_ids(
            [
                released.question_id(instances[r["instance"]].source, instances[r["instance"]].image_id, r)
                for r in rows
            ]
        )
        by_split = {}
        for row, row_id in zip(rows, ids):
            row["id"] = row_id
            by_split.setdefault(split_of[instances[row["instance"]].image_id], []).append(row)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"rows": split_rows, "instances": instances})
            for split, split_rows in sorted(by_split.items())
        ]

    def _released_split_generators(self, files: dict):
        """The released questions, as released (see `released.py`); bad records counted and skipped."""
        stats = ReadStats()
        by_split = {}
        for split, path in files.items():
            by_split[split] = released.read_qa_file(path, self.config.name, stats)
        rows = [row for split_rows in by_split.values() for row in split_rows]
        if not rows:
            raise ValueError(
                f"no usable questions in {', '.join(map(str, files.values()))} "
                f"({len(stats.bad_files)} bad records: {stats.bad_files[:3]})"
            )
        ontology = Ontology(
            {row["object"]: set() for row in rows}, {row["object"]: row["object_category"] for row in rows}
        )
        for row in rows:
            ontology.object_parts[row["object"]].update(row["parts"])
        ontology._derive()
        self.build_report = {
            "question_set": {
                "kind": "released",
                "files": {split: Path(p).name for split, p in files.items()},
            },
            "instances": len({(row["image_id"], row["object"]) for row in rows}),
            "bad_files": stats.bad_files,
            "skipped_reading": dict(stats.skipped),
            "skipped_questions": {},
            "ontology": ontology.to_dict(),
        }
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"rows": split_rows, "instances": None})
            for split, split_rows in sorted(by_split.items())
            if split_rows
        ]

    def _generate_examples(self, rows, instances):
        for row in rows:
            if instances is None:  # a released question: the row is complete but for its image's bytes
                example = {k: v for k, v in row.items() if k != "image_file"}
                path = Path(row["image_file"])
                example["image"] = {"bytes": path.read_bytes(), "path": path.name}
            else:
                example = make_example(row, instances[row["instance"]])
            yield example["id"], example
