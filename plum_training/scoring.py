"""Answer-choice selection shared by in-training evaluation and `eval_partonomy.py`: the choice with the highest mean
token log-likelihood given the image and the conversation so far; part-whole questions take two turns."""

from __future__ import annotations


def choose(model, processor, image, turns, choices) -> tuple[list[float], int]:
    """Scores of the answer choices after `turns` (the last one open) and the index of the best."""
    inputs = processor.choice_inputs(image, turns, choices)
    scores = model.score_choices(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
        inputs["choice_ids"],
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    scores = scores.float().cpu()
    return scores.tolist(), int(scores.argmax())


def predict_text(model, processor, row) -> dict:
    """Choice scores and picks for one question, in the paper's order for the part-whole types: part2whole picks the
    parts, then the object in the conversation that follows that answer; whole2part the object first."""
    image, out = row["image"], {}
    objects = row["object_answer_choices"]
    if row["question_type"] == "whole2part":
        out["object_scores"], out["object_chosen"] = choose(
            model, processor, image, [(row["object_question"], None)], objects
        )
        history = [(row["object_question"], objects[out["object_chosen"]])]
        out["scores"], out["chosen"] = choose(
            model, processor, image, history + [(row["question"], None)], row["answer_choices"]
        )
    else:
        out["scores"], out["chosen"] = choose(
            model, processor, image, [(row["question"], None)], row["answer_choices"]
        )
        if row["question_type"] == "part2whole":
            history = [(row["question"], row["answer_choices"][out["chosen"]])]
            out["object_scores"], out["object_chosen"] = choose(
                model, processor, image, history + [(row["object_question"], None)], objects
            )
    return out
