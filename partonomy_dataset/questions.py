"""From instances to PARTONOMY questions: ontology, the five question types, answer choices, splits."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import templates
from .instances import Instance
from .mutation import (
    DEFAULT_EMBEDDING_MODEL,
    NUM_WRONG,
    ObjectSimilarity,
    PartCooccurrence,
    wrong_part_answers,
)

logger = logging.getLogger(__name__)

TRAIN_FRACTION = 0.8
MIN_CATEGORY_POOL = 3  # the object's category must offer this many parts beyond the correct ones


@dataclass
class Ontology:
    """object → parts (from the data, optionally merged with a given ontology), object → category,
    category → objects."""

    object_parts: dict[str, set[str]]
    object_category: dict[str, str]
    category_objects: dict[str, list[str]] = field(default_factory=dict)
    category_parts: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_instances(cls, instances: list[Instance], extra: dict | None = None) -> Ontology:
        """`extra`: an optional ontology, `{"objects": {object: {"category": str, "parts": [str]}}}`."""
        object_parts: dict[str, set[str]] = defaultdict(set)
        object_category: dict[str, str] = {}
        for instance in instances:
            object_parts[instance.object].update(instance.parts)
            object_category.setdefault(instance.object, instance.category)
        for obj, entry in ((extra or {}).get("objects") or {}).items():
            object_parts[obj].update(entry.get("parts", []))
            object_category.setdefault(obj, entry.get("category", "object"))
        ontology = cls(dict(object_parts), object_category)
        ontology._derive()
        return ontology

    def _derive(self):
        category_objects, category_parts = defaultdict(list), defaultdict(set)
        for obj in sorted(self.object_parts):
            category = self.object_category[obj]
            category_objects[category].append(obj)
            category_parts[category].update(self.object_parts[obj])
        self.category_objects = dict(category_objects)
        self.category_parts = {c: sorted(p) for c, p in category_parts.items()}

    def to_dict(self) -> dict:
        return {
            "objects": {
                o: {"category": self.object_category[o], "parts": sorted(p)}
                for o, p in sorted(self.object_parts.items())
            }
        }


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator per image, so that results do not depend on the order or the number of workers."""
    digest = hashlib.sha256(f"{image_id}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


@dataclass
class QuestionGenerator:
    """Everything question generation needs, fit once per dataset; picklable for worker processes."""

    ontology: Ontology
    cooccurrence: PartCooccurrence
    similarity: ObjectSimilarity
    seed: int = 42

    def _pool(self, obj: str, correct: list[str]) -> list[str]:
        category_parts = self.ontology.category_parts[self.ontology.object_category[obj]]
        if len(set(category_parts) - set(correct)) >= MIN_CATEGORY_POOL:
            return category_parts
        return self.cooccurrence.vocabulary

    def _comparison(self, obj: str, visible: set[str], rng, question_type: str) -> str | None:
        """Another object sharing a part (intersection) or lacking a visible part (difference), preferring
        the same category."""

        def fits(other):
            other_parts = self.ontology.object_parts[other]
            return (
                bool(visible & other_parts)
                if question_type == "intersection"
                else bool(visible - other_parts)
            )

        others = [o for o in sorted(self.ontology.object_parts) if o != obj and fits(o)]
        same = [o for o in others if self.ontology.object_category[o] == self.ontology.object_category[obj]]
        candidates = same or others
        return candidates[rng.integers(len(candidates))] if candidates else None

    def question(self, question_type: str, obj: str, visible: list[str], rng) -> tuple[dict | None, str]:
        """One question about an object with `visible` parts; `(None, reason)` when it cannot be asked."""
        comparison = None
        correct = sorted(visible)
        if question_type in ("intersection", "difference"):
            comparison = self._comparison(obj, set(visible), rng, question_type)
            if comparison is None:
                return None, f"{question_type}: no comparison object"
            other_parts = self.ontology.object_parts[comparison]
            keep = (
                (lambda p: p in other_parts)
                if question_type == "intersection"
                else (lambda p: p not in other_parts)
            )
            correct = [p for p in correct if keep(p)]
        if not correct:
            return None, f"{question_type}: empty ground truth"
        probabilities = self.cooccurrence.probabilities(correct)
        pool = self._pool(obj, correct)
        scores = {p: probabilities[self.cooccurrence.index[p]] for p in pool}
        wrong = wrong_part_answers(correct, pool, scores, rng)
        if wrong is None:
            return None, f"{question_type}: fewer than {NUM_WRONG} distinct wrong answers"

        row = {"question_type": question_type, "comparison_object": comparison, "parts": correct}
        if question_type in templates.PART_WHOLE_TYPES:
            wrong_objects = self.similarity.wrong_objects(obj, rng)
            if wrong_objects is None:
                return None, f"{question_type}: fewer than {NUM_WRONG + 1} object labels"
            labels, row["object_correct_index"] = _shuffle([obj] + wrong_objects, rng)
            row["object_question"] = templates.OBJECT_QUESTION
            row["object_answer_choices"] = [templates.object_answer(label) for label in labels]
        else:
            row["object_question"], row["object_answer_choices"], row["object_correct_index"] = None, [], -1

        named = templates.UNNAMED_OBJECT if question_type == "part2whole" else obj
        row["question"] = templates.parts_question(question_type, named, comparison)
        row["answer_parts"], row["correct_index"] = _shuffle([correct] + wrong, rng)
        row["answer_choices"] = [
            templates.parts_answer(question_type, named, parts, comparison) for parts in row["answer_parts"]
        ]
        return row, ""

    def image_questions(self, image_id: str, objects: list[tuple[int, str, list[str]]]):
        """At most one question per type for one image. `objects`: (instance index, label, visible parts).

        Returns (rows with their `instance` index, Counter of skip reasons)."""
        rng = image_rng(self.seed, image_id)
        rows, skipped = [], Counter()
        for question_type in templates.QUESTION_TYPES:
            reason = ""
            for k in rng.permutation(len(objects)):
                index, obj, visible = objects[k]
                row, reason = self.question(question_type, obj, visible, rng)
                if row is not None:
                    row["instance"] = index
                    rows.append(row)
                    break
            else:
                skipped[reason] += 1
        return rows, skipped


def _shuffle(choices: list, rng) -> tuple[list, int]:
    """Choices in a random order (the reference code keeps the correct one first) and the correct index."""
    order = rng.permutation(len(choices))
    return [choices[i] for i in order], int(np.flatnonzero(order == 0)[0])


_WORKER: QuestionGenerator | None = None


def _init_worker(generator):
    global _WORKER
    _WORKER = generator


def _work(item):
    return _WORKER.image_questions(*item)


def build_questions(
    instances: list[Instance],
    seed: int = 42,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    num_proc: int = 1,
    ontology_extra: dict | None = None,
) -> tuple[list[dict], Counter, Ontology]:
    """Questions for every image. Each row carries `instance`, the index of its instance in `instances`.

    Returns (rows in image order, Counter of skipped questions by reason, the ontology).
    """
    started = time.perf_counter()
    ontology = Ontology.from_instances(instances, ontology_extra)
    cooccurrence = PartCooccurrence([list(i.parts) for i in instances], n_jobs=num_proc)
    fitted = time.perf_counter()
    similarity = ObjectSimilarity(sorted(ontology.object_parts), ontology.object_category, embedding_model)
    embedded = time.perf_counter()
    generator = QuestionGenerator(ontology, cooccurrence, similarity, seed)

    by_image = defaultdict(list)
    for index, instance in enumerate(instances):
        by_image[instance.image_id].append((index, instance.object, sorted(instance.parts)))
    work = sorted(by_image.items())
    rows, skipped = [], Counter()
    if num_proc > 1 and len(work) > 1:
        context = multiprocessing.get_context("spawn")  # no fork after torch / BLAS threads started
        with context.Pool(num_proc, initializer=_init_worker, initargs=(generator,)) as pool:
            results = pool.imap(_work, work, chunksize=max(1, len(work) // (num_proc * 16)))
            for image_rows, image_skipped in tqdm(results, total=len(work), desc="questions"):
                rows.extend(image_rows)
                skipped.update(image_skipped)
    else:
        for item in tqdm(work, desc="questions"):
            image_rows, image_skipped = generator.image_questions(*item)
            rows.extend(image_rows)
            skipped.update(image_skipped)
    logger.info(
        "co-occurrence models %.1f s, object embeddings %.1f s, %d questions %.1f s (%d processes)",
        fitted - started,
        embedded - fitted,
        len(rows),
        time.perf_counter() - embedded,
        num_proc,
    )
    if skipped:
        logger.info("skipped questions: %s", dict(skipped))
    return rows, skipped, ontology


def split_images(image_ids, seed: int = 42, train_fraction: float = TRAIN_FRACTION) -> dict[str, str]:
    """image id → "train" / "validation", an 80/20 split by image."""
    ordered = sorted(set(image_ids))
    order = np.random.default_rng(seed).permutation(len(ordered))
    num_train = int(round(train_fraction * len(ordered)))
    return {ordered[i]: ("train" if rank < num_train else "validation") for rank, i in enumerate(order)}
