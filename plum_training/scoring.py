"""Answer-choice selection shared by in-training evaluation and `eval_partonomy.py`: the choice with the highest mean
token log-likelihood given the image and the conversation so far; part-whole questions take two turns.

A scorer is called as `scorer(image, turns, choices) -> (num_choices,) float32 tensor`, where `turns` is the
conversation as (question, answer) pairs whose last answer is `None` (the question being answered):

- `PlumChoiceScorer`: PLUM's own processor format and `score_choices`;
- `ChatTemplateChoiceScorer`: any transformers image-text-to-text model (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics3 ...)
  through its own processor and chat template.
"""

from __future__ import annotations

import logging

import torch

from modeling_plum.scoring_plum import shared_prefix_log_likelihoods

logger = logging.getLogger(__name__)


class PlumChoiceScorer:
    """PLUM: its processor's conversation format, the shared image + question prefix run once (`score_choices`)."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    def __call__(self, image, turns, choices) -> torch.Tensor:
        inputs = self.processor.choice_inputs(image, turns, choices)
        scores = self.model.score_choices(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],
            inputs["choice_ids"],
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        return scores.float().cpu()


class ChatTemplateChoiceScorer:
    """Any transformers image-text-to-text model, through its own processor and chat template.

    Each choice is the assistant's answer to the last question. Its tokens are found by rendering and tokenising the
    whole conversation with that answer (prompt + choice together, never the choice alone, so tokens merged across the
    boundary and the template's end-of-turn are what the model would see) and taking what follows the prompt's
    tokens. The image + question prefix runs once; its KV cache, repeated, serves all the choices in one padded
    batch. A choice whose tokens do not extend the prompt's is scored by a full forward instead (counted in
    `full_forwards`)."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.full_forwards = 0
        tokenizer = getattr(processor, "tokenizer", processor)
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )

    @staticmethod
    def messages(turns) -> list[dict]:
        """(question, answer) turns → chat messages; the image goes with the first question."""
        messages = []
        for index, (question, answer) in enumerate(turns):
            content = [{"type": "text", "text": question}]
            if index == 0:
                content.insert(0, {"type": "image"})
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def _inputs(self, text: str, image) -> dict:
        inputs = self.processor(text=[text], images=[image], return_tensors="pt")
        device = self.model.get_input_embeddings().weight.device
        dtype = self.model.dtype
        return {
            k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            if torch.is_tensor(v)
            else v
            for k, v in inputs.items()
        }

    def _conversation(self, turns, choice=None, generation_prompt=False) -> str:
        answered = list(turns[:-1]) + [(turns[-1][0], choice)]
        return self.processor.apply_chat_template(
            self.messages(answered), add_generation_prompt=generation_prompt, tokenize=False
        )

    def continuations(self, image, turns, choices) -> tuple[dict, list[list[int] | None]]:
        """The prompt's model inputs and, per choice, the token ids that follow the prompt (None when the rendered
        conversation does not extend the prompt token for token)."""
        prompt = self._inputs(self._conversation(turns, generation_prompt=True), image)
        prompt_ids = prompt["input_ids"][0].tolist()
        result = []
        for choice in choices:
            full = self.processor(text=[self._conversation(turns, choice)], images=[image])["input_ids"][0]
            full = list(full.tolist() if torch.is_tensor(full) else full)
            ok = full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids)
            result.append(full[len(prompt_ids) :] if ok else None)
        return prompt, result

    @torch.no_grad()
    def __call__(self, image, turns, choices) -> torch.Tensor:
        if not choices:
            raise ValueError("no answer choices to score")
        prompt, continuations = self.continuations(image, turns, choices)
        scores = torch.full((len(choices),), float("nan"))
        shared = [i for i, ids in enumerate(continuations) if ids is not None]
        if shared:
            scores[shared] = self._shared_prefix_scores(prompt, [continuations[i] for i in shared])
        for i in (i for i, ids in enumerate(continuations) if ids is None):
            self.full_forwards += 1
            scores[i] = self.full_forward_scores(image, turns, [choices[i]])[0]
        return scores

    def _shared_prefix_scores(self, prompt: dict, continuations: list[list[int]]) -> torch.Tensor:
        return shared_prefix_log_likelihoods(self.model, prompt, continuations, self.pad_token_id).cpu()

    @torch.no_grad()
    def full_forward_scores(self, image, turns, choices) -> torch.Tensor:
        """The same scores with one full forward per choice (the reference for the shared-prefix scores)."""
        prompt_length = self._inputs(self._conversation(turns, generation_prompt=True), image)[
            "input_ids"
        ].shape[1]
        scores = []
        for choice in choices:
            full = self._inputs(self._conversation(turns, choice), image)
            logits = self.model(**full).logits[0, prompt_length - 1 : -1].float()
            targets = full["input_ids"][0, prompt_length:]
            scores.append(logits.log_softmax(-1).gather(-1, targets[:, None]).mean())
        return torch.stack(scores).cpu()


def choose(scorer, image, turns, choices) -> tuple[list[float], int]:
    """Scores of the answer choices after `turns` (the last one open) and the index of the best."""
    scores = scorer(image, turns, choices)
    return scores.tolist(), int(scores.argmax())


def predict_text(scorer, row) -> dict:
    """Choice scores and picks for one question, in the paper's order for the part-whole types: part2whole picks the
    parts, then the object in the conversation that follows that answer; whole2part the object first."""
    image, out = row["image"], {}
    objects = row["object_answer_choices"]
    if row["question_type"] == "whole2part":
        out["object_scores"], out["object_chosen"] = choose(
            scorer, image, [(row["object_question"], None)], objects
        )
        history = [(row["object_question"], objects[out["object_chosen"]])]
        out["scores"], out["chosen"] = choose(
            scorer, image, history + [(row["question"], None)], row["answer_choices"]
        )
    else:
        out["scores"], out["chosen"] = choose(scorer, image, [(row["question"], None)], row["answer_choices"])
        if row["question_type"] == "part2whole":
            history = [(row["question"], row["answer_choices"][out["chosen"]])]
            out["object_scores"], out["object_chosen"] = choose(
                scorer, image, history + [(row["object_question"], None)], objects
            )
    return out
