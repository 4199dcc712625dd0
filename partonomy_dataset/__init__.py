"""PARTONOMY: source readers, question generation with answer mutation, and the Hub-ready builder.

python -m partonomy_dataset build --config toy --out partonomy
datasets.load_dataset("partonomy", "toy")
"""

from .builder import FEATURES, SOURCES, Partonomy, PartonomyConfig
from .instances import Instance, ReadStats
from .questions import Ontology, build_questions, split_images

__all__ = [
    "FEATURES",
    "SOURCES",
    "Instance",
    "Ontology",
    "Partonomy",
    "PartonomyConfig",
    "ReadStats",
    "build_questions",
    "split_images",
]
