"""The question and answer templates of PARTONOMY (paper §3.1, appendix B), in one place."""

from __future__ import annotations

QUESTION_TYPES = ("identification", "intersection", "difference", "part2whole", "whole2part")
PART_WHOLE_TYPES = ("part2whole", "whole2part")
UNNAMED_OBJECT = "object"  # what part2whole calls the object before it is named

OBJECT_QUESTION = "What is the object in the image?"

_VOWEL_SOUND_EXCEPTIONS = ("hour", "honest", "honor", "heir")
_CONSONANT_SOUND_EXCEPTIONS = ("uni", "use", "usu", "uti", "eu", "one", "once", "ufo", "ewe")


def article(noun: str) -> str:
    """`a` or `an` for a noun phrase ("an airplane", "a unicycle", "an hour glass")."""
    word = noun.strip().lower()
    if word.startswith(_VOWEL_SOUND_EXCEPTIONS):
        return "an"
    if word.startswith(_CONSONANT_SOUND_EXCEPTIONS):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


def with_article(noun: str) -> str:
    return f"{article(noun)} {noun}"


def join_parts(parts: list[str]) -> str:
    """ "a", "a and b", "a, b, and c"."""
    if not parts:
        raise ValueError("an answer needs at least one part")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + f", and {parts[-1]}"


def parts_question(question_type: str, obj: str, comparison: str | None = None) -> str:
    """The parts question. part2whole asks about "the object" (`obj` = `UNNAMED_OBJECT`)."""
    if question_type in ("identification", "part2whole", "whole2part"):
        return f"What visible parts does the {obj} in the image have?"
    if question_type == "intersection":
        return (
            f"What visible parts does the {obj} in the image have in common with {with_article(comparison)}?"
        )
    if question_type == "difference":
        return f"What visible parts does the {obj} in the image have which {with_article(comparison)} does not have?"
    raise ValueError(f"unknown question type {question_type!r}; expected one of {QUESTION_TYPES}")


def parts_answer_prefix(question_type: str, obj: str, comparison: str | None = None) -> str:
    """The answer up to its part list; the part names follow it, joined by `join_parts`, then a full stop."""
    if question_type in ("identification", "part2whole", "whole2part"):
        return f"The {obj} in the image has the following visible parts: "
    if question_type == "intersection":
        return f"The {obj} in the image has the following visible parts in common with {with_article(comparison)}: "
    if question_type == "difference":
        return f"The {obj} in the image has the following visible parts which {with_article(comparison)} does not: "
    raise ValueError(f"unknown question type {question_type!r}; expected one of {QUESTION_TYPES}")


def parts_answer(question_type: str, obj: str, parts: list[str], comparison: str | None = None) -> str:
    return parts_answer_prefix(question_type, obj, comparison) + join_parts(parts) + "."


def object_answer(label: str) -> str:
    return f"It is {with_article(label)}."
