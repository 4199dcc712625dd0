"""Question generation: templates, ontology, the five types, mutations, wrong objects, determinism, splits."""

from collections import Counter

import numpy as np
import pytest

from partonomy_dataset import templates
from partonomy_dataset.instances import Instance
from partonomy_dataset.mutation import ObjectSimilarity, PartCooccurrence, mutate, wrong_part_answers
from partonomy_dataset.questions import Ontology, build_questions, split_images
from partonomy_dataset.sources import toy


def test_articles_and_part_lists():
    assert templates.with_article("airplane") == "an airplane"
    assert templates.with_article("unicycle") == "a unicycle"
    assert templates.with_article("hour glass") == "an hour glass"
    assert templates.with_article("dog") == "a dog"
    assert templates.join_parts(["wing"]) == "wing"
    assert templates.join_parts(["wing", "tail"]) == "wing and tail"
    assert templates.join_parts(["wing", "tail", "engine"]) == "wing, tail, and engine"
    assert templates.parts_answer("difference", "car", ["door", "wheel"], "airplane") == (
        "The car in the image has the following visible parts which an airplane does not: door and wheel."
    )
    with pytest.raises(ValueError, match="unknown question type 'colour'"):
        templates.parts_question("colour", "car")


def make_instance(image_id, obj, category, parts):
    return Instance("test", image_id, "", 10, 10, obj, category, dict.fromkeys(parts, {}), {})


def test_ontology_merges_data_and_given_ontology():
    instances = [
        make_instance("1", "car", "vehicle", ["door", "wheel"]),
        make_instance("2", "car", "vehicle", ["window"]),
        make_instance("3", "dog", "animal", ["tail"]),
    ]
    ontology = Ontology.from_instances(
        instances, {"objects": {"bus": {"category": "vehicle", "parts": ["door"]}}}
    )
    assert ontology.object_parts["car"] == {"door", "wheel", "window"}
    assert ontology.category_objects == {"animal": ["dog"], "vehicle": ["bus", "car"]}
    assert ontology.category_parts["vehicle"] == ["door", "wheel", "window"]


def test_cooccurrence_prefers_parts_seen_together():
    part_sets = (
        [["door", "wheel", "window"]] * 30 + [["wing", "tail", "engine"]] * 30 + [["door", "wing"]] * 2
    )
    model = PartCooccurrence(part_sets)
    p = dict(zip(model.vocabulary, model.probabilities(["wheel", "door"])))
    assert p["window"] > p["engine"] and p["window"] > p["tail"]
    q = dict(zip(model.vocabulary, model.probabilities(["wing", "engine"])))
    assert q["tail"] > q["window"]


def test_mutations_are_small_distinct_and_never_empty():
    pool = ["a", "b", "c", "d", "e", "f"]
    scores = dict.fromkeys(pool, 0.5)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        correct = sorted(rng.choice(pool, size=rng.integers(1, 4), replace=False).tolist())
        mutated = mutate(correct, pool, scores, rng)
        assert mutated and mutated == sorted(mutated) and set(mutated) != set(correct)
        changed = set(mutated) ^ set(correct)
        assert 1 <= len(changed) <= 4  # 1-2 operations, each adding, removing or swapping one part
        wrong = wrong_part_answers(correct, pool, scores, rng)
        assert len(wrong) == 4 and len({tuple(w) for w in wrong} | {tuple(correct)}) == 5
    assert wrong_part_answers(["a"], ["a", "b"], {"a": 1, "b": 1}, np.random.default_rng(0)) is None


def test_wrong_objects_by_similarity():
    labels = ["cat", "dog", "tiger", "lion", "wolf", "airplane", "helicopter", "truck"]
    categories = {
        "cat": "animal",
        "dog": "animal",
        "tiger": "animal",
        "lion": "animal",
        "wolf": "animal",
        "airplane": "vehicle",
        "helicopter": "vehicle",
        "truck": "vehicle",
    }
    similarity = ObjectSimilarity(labels, categories)
    for seed in range(5):
        wrong = similarity.wrong_objects("cat", np.random.default_rng(seed))
        assert sorted(wrong) == ["dog", "lion", "tiger", "wolf"]  # the same category has exactly 4 others
    drawn = Counter()
    for seed in range(60):
        drawn.update(similarity.wrong_objects("airplane", np.random.default_rng(seed)))
    assert (
        drawn.most_common(1)[0][0] == "helicopter"
    )  # too few vehicles: every label competes, the closest wins
    assert similarity.wrong_objects("cat", np.random.default_rng(0), num_wrong=8) is None


@pytest.fixture(scope="module")
def toy_questions(tmp_path_factory):
    instances = toy.generate(tmp_path_factory.mktemp("toy"), 85, seed=42)
    rows, skipped, ontology = build_questions(instances, seed=42)
    return instances, rows, skipped, ontology


def test_question_rows(toy_questions):
    instances, rows, skipped, ontology = toy_questions
    per_image = Counter((instances[r["instance"]].image_id, r["question_type"]) for r in rows)
    assert max(per_image.values()) == 1  # at most one question per type per image
    assert set(r["question_type"] for r in rows) == set(templates.QUESTION_TYPES)
    assert sum(skipped.values()) + len(rows) == 5 * len(instances)
    for row in rows:
        instance = instances[row["instance"]]
        visible = set(instance.parts)
        choices = row["answer_parts"]
        assert len(choices) == 5 == len(row["answer_choices"]) and all(choices)
        assert len({tuple(c) for c in choices}) == 5
        assert choices[row["correct_index"]] == row["parts"]
        for parts, text in zip(choices, row["answer_choices"]):
            assert text.endswith(templates.join_parts(parts) + ".")
        if row["question_type"] == "intersection":
            assert set(row["parts"]) == visible & ontology.object_parts[row["comparison_object"]]
        elif row["question_type"] == "difference":
            assert set(row["parts"]) == visible - ontology.object_parts[row["comparison_object"]]
        else:
            assert set(row["parts"]) == visible
        if row["question_type"] in templates.PART_WHOLE_TYPES:
            objects = row["object_answer_choices"]
            assert len(set(objects)) == 5
            assert objects[row["object_correct_index"]] == templates.object_answer(instance.object)
        else:
            assert row["object_answer_choices"] == [] and row["object_correct_index"] == -1
        if row["question_type"] == "part2whole":
            assert row["question"] == "What visible parts does the object in the image have?"
    positions = Counter(r["correct_index"] for r in rows)
    assert set(positions) == {0, 1, 2, 3, 4} and max(positions.values()) < 0.35 * len(rows)


def test_questions_are_deterministic_and_independent_of_workers(toy_questions):
    instances, rows, _, _ = toy_questions
    again, _, _ = build_questions(instances, seed=42)
    assert again == rows
    parallel, _, _ = build_questions(instances, seed=42, num_proc=2)
    assert parallel == rows
    other, _, _ = build_questions(instances, seed=7)
    assert other != rows


def test_split_by_image():
    ids = [f"img{i}" for i in range(100)]
    split = split_images(ids + ids[:10], seed=42)
    assert Counter(split.values()) == {"train": 80, "validation": 20}
    assert split == split_images(list(reversed(ids)), seed=42)
    assert split != split_images(ids, seed=1)
