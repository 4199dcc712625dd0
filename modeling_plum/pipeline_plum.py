# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""The `part-segmentation` pipeline: PLUM in one call, the transformers way.

    from transformers import pipeline
    pipe = pipeline("part-segmentation", model="path/or/hub-id", trust_remote_code=True)
    out = pipe(image, "What visible parts does the car in the image have?")
    out["text"], out["spans"], out["masks"]         # answer, [{"label", "start", "end"}], [(H, W) bool arrays]
    pipe(image, question, answer="... wheel, door ...")                   # the span tagger over a given answer
    pipe(image, question, answer="... wheel, door ...", spans=["wheel", "door"])  # highlight-to-segment
    pipe([image_1, image_2], question, return_rle=True)                    # a list of results; masks as COCO RLE

A PLUM checkpoint carries this file and names it in `config.json` (`custom_pipelines`): `modeling_plum.py` imports it,
so `save_pretrained` copies it, and `PlumForConditionalGeneration` writes `custom_pipelines()` into its config.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_plum import IGNORE_INDEX, bio_to_spans, find_part_spans, to_rgb, token_span, trim_span

try:  # only `return_rle=True` needs it
    from pycocotools import mask as coco_mask
except ImportError:
    coco_mask = None

TASK = "part-segmentation"


class PlumInputError(ValueError):
    """An input the caller can fix (an image PIL cannot use, a word not in the answer, a text too long ...)."""


def _per_input(value, index: int, count: int, name: str, shared: bool):
    """`value` for input `index` of `count`: the same for every input when `shared`, else the `index`-th of a list of
    one per input."""
    if value is None or shared:
        return value
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise PlumInputError(f"{name}: give one for all {count} images, or a list of {count} (one per image)")
    return value[index]


def answer_span_chars(answer: str, spans) -> list[tuple[int, int]]:
    """Character spans of `spans` inside `answer`: each a `(start, end)` pair, or a word or phrase of the answer found
    as whole words in its part list (after the last ": ", anywhere when there is none) by `find_part_spans`."""
    chars = []
    for span in spans:
        if isinstance(span, str):
            try:
                (found,) = find_part_spans(answer, [span.strip()])
            except ValueError:
                raise PlumInputError(
                    f"{span.strip()!r} is not in the answer (searched as whole words after its last ': ')"
                ) from None
            chars.append(found)
            continue
        start, end = (int(x) for x in span)
        if not 0 <= start < end <= len(answer):
            raise PlumInputError(
                f"span ({start}, {end}) is empty or outside the answer's {len(answer)} characters"
            )
        chars.append((start, end))
    return chars


def rle_encode(mask: np.ndarray) -> dict:
    """COCO RLE of an `(H, W)` bool mask: `{"size": [H, W], "counts": str}` (counts as UTF-8 text, as in PARTONOMY)."""
    if coco_mask is None:
        raise ImportError("return_rle=True needs pycocotools: pip install pycocotools")
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("utf-8")}


class PlumPartSegmentationPipeline(Pipeline):
    """Answers a question about an image and segments the parts the answer names (or given words of a given answer).

    Call: `pipe(images, question, answer=None, spans=None, return_rle=False, max_new_tokens=64)`.

    - `images`: a PIL image, an `(H, W[, 3])` uint8 array, a path or URL; or a list of them (then the result is a list,
      and `question` / `answer` may be one string for all or a list with one per image, `spans` a list of span lists).
    - no `answer`: PLUM generates one (greedy), its span tagger marks the part names, each span is segmented.
    - `answer` without `spans`: the span tagger marks the parts of that answer (e.g. the best answer choice).
    - `answer` and `spans` (highlight-to-segment): words or phrases of the answer (found as whole words) or
      `(start, end)` character offsets into it; each is segmented, in order, with the mask feedback loop.

    Returns `{"text": answer, "spans": [{"label": text, "start": int, "end": int}], "masks": [...]}` with one mask per
    span, in order: `(H, W)` bool numpy arrays at the image's size, or COCO RLE dicts with `return_rle=True`. Spans
    are character offsets into `text`; only spans inside the answer are ever segmented.

    Args:
        embedding_cache (*optional*): an object with `embeddings(images, sam_pixel_values)` that keeps SAM image
            embeddings across calls (e.g. `plum_training.embedding_cache.ImageEmbeddingCache`); by default each
            call encodes its image.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, embedding_cache=None, **kwargs):
        self.embedding_cache = embedding_cache
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("the part-segmentation pipeline needs PLUM's processor (processor=...)")

    def __call__(self, images, question=None, answer=None, spans=None, **kwargs):
        if isinstance(images, dict):  # {"image", "question", "answer", "spans"}
            return super().__call__(images, **kwargs)
        if not isinstance(images, (list, tuple)):
            return super().__call__(
                {"image": images, "question": question, "answer": answer, "spans": spans}, **kwargs
            )
        count = len(images)
        inputs = [
            {
                "image": image,
                "question": _per_input(question, i, count, "question", isinstance(question, str)),
                "answer": _per_input(answer, i, count, "answer", isinstance(answer, str)),
                "spans": _per_input(spans, i, count, "spans (a list of span lists, one per image)", False),
            }
            for i, image in enumerate(images)
        ]
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, return_rle=None, max_new_tokens=None, **unused):
        forward = {} if max_new_tokens is None else {"max_new_tokens": int(max_new_tokens)}
        postprocess = {} if return_rle is None else {"return_rle": bool(return_rle)}
        return {}, forward, postprocess

    # -- preprocess ----------------------------------------------------------------------------------------

    def _image(self, image):
        if image is None:
            raise PlumInputError("an image is needed")
        if isinstance(image, str):
            try:
                image = load_image(image)
            except (OSError, ValueError) as error:
                raise PlumInputError(f"cannot read the image {image!r}: {error}") from None
        try:
            return to_rgb(image)
        except ValueError as error:
            raise PlumInputError(str(error)) from None

    def preprocess(self, inputs: dict):
        image = self._image(inputs.get("image"))
        question, answer, spans = inputs.get("question"), inputs.get("answer"), inputs.get("spans")
        if not isinstance(question, str) or not question.strip():
            raise PlumInputError("a question is needed")
        question = question.strip()
        if spans is not None and answer is None:
            raise PlumInputError("spans point into an answer: pass answer=... with them")
        try:
            features = self.processor.images([image])
            if answer is None:  # the prompt, up to the open assistant turn
                prompt = self.processor.choice_inputs(None, [(question, None)], [])
                features.update(input_ids=prompt["input_ids"], attention_mask=prompt["attention_mask"])
        except ValueError as error:  # a text longer than the processor's budget
            raise PlumInputError(str(error)) from None
        features.update(image=image, question=question, answer=answer)
        features["char_spans"] = None if spans is None else answer_span_chars(answer, spans)
        return features

    # -- forward -------------------------------------------------------------------------------------------

    def _image_embeddings(self, features):
        if self.embedding_cache is not None:
            return self.embedding_cache.embeddings([features["image"]], features["sam_pixel_values"])
        return self.model.get_image_embeddings(features["sam_pixel_values"])

    def _generate(self, features, max_new_tokens: int) -> str:
        """The answer PLUM generates (greedy) for the question."""
        names = ("input_ids", "attention_mask", "pixel_values")
        prompt = dict(zip(names, self.model._prompt_inputs(*(features[name] for name in names))))
        sequences = self.model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
        answer_ids = sequences[0, prompt["input_ids"].shape[1] :].tolist()
        return self.processor.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()

    def _encode(self, question: str, answer: str):
        """The conversation's token ids and offsets once, and where the answer's characters start in its text."""
        try:
            encoded = self.processor.encode_conversation([(question, answer)])
        except ValueError as error:
            raise PlumInputError(str(error)) from None
        start = encoded["text"].rfind(" " + answer) + 1
        return encoded, start

    def _tagged_spans(self, tags, offsets, answer: str, start: int):
        """The tagger's token spans inside the answer, with their character spans in it.

        Tags of tokens outside the answer's characters (the question, `</s>`) are dropped before spans are formed, and
        a span whose text trims to nothing (a lone comma) is left out: no span outside the answer is segmented."""

        end = start + len(answer)
        inside = [e > s and e > start and s < end for s, e in offsets]
        token_spans = bio_to_spans([t if ok else IGNORE_INDEX for t, ok in zip(tags, inside)])
        kept, chars = [], []
        for s, e in token_spans:
            first, last = trim_span(
                answer, max(offsets[s][0], start) - start, min(offsets[e - 1][1], end) - start
            )
            if last > first:
                kept.append((s, e))
                chars.append((first, last))
        return kept, chars

    def _forward(self, features, max_new_tokens: int = 64):
        question, answer, char_spans = features["question"], features["answer"], features["char_spans"]
        tag = char_spans is None
        if tag and self.model.config.segmentation_query == "seg_token":
            raise PlumInputError(
                "this checkpoint marks parts with [SEG] tokens: pass spans=[...] to segment words"
            )
        if answer is None:
            answer = self._generate(features, max_new_tokens)
        result = {"text": answer, "char_spans": []}
        if not answer.strip():
            return {**result, "mask_logits": None}
        encoded, start = self._encode(question, answer)
        input_ids = torch.tensor([encoded["input_ids"]], device=self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=features["pixel_values"],
            output_logits=False,
        )  # the language model and the span tagger once; no SAM inputs, so no masks yet
        if tag:
            tags = self.model._predicted_tags(input_ids, out.span_logits)[0].tolist()
            token_spans, char_spans = self._tagged_spans(tags, encoded["offsets"], answer, start)
        else:
            offsets, text = encoded["offsets"], encoded["text"]
            token_spans = [token_span(offsets, start + s, start + e, text) for s, e in char_spans]
        result["char_spans"] = char_spans
        if not token_spans:
            return {**result, "mask_logits": None}
        logits, _ = self.model.decode_masks_batch(
            self._image_embeddings(features),
            [self.model.span_queries(out.hidden_states[0], token_spans)],
            features["original_sizes"],
            features["resized_sizes"],
        )
        return {**result, "mask_logits": logits[0]}

    # -- postprocess ---------------------------------------------------------------------------------------

    def postprocess(self, outputs, return_rle: bool = False):
        text, logits = outputs["text"], outputs["mask_logits"]
        masks = [] if logits is None else list((logits > self.model.config.mask_threshold).numpy())
        spans = [{"label": text[s:e], "start": s, "end": e} for s, e in outputs["char_spans"]]
        if return_rle:
            masks = [rle_encode(m) for m in masks]
        return {"text": text, "spans": spans, "masks": masks}


def custom_pipelines() -> dict:
    """The `custom_pipelines` entry of a PLUM `config.json`, as `Pipeline.save_pretrained` writes it for a registered
    pipeline: `pipeline("part-segmentation", model=..., trust_remote_code=True)` finds this class through it."""
    module = PlumPartSegmentationPipeline.__module__.rsplit(".", 1)[-1]
    return {
        task: {
            **info,
            "impl": f"{module}.{info['impl'].__name__}",
            "pt": [model_class.__name__ for model_class in info["pt"]],
        }
        for task, info in PlumPartSegmentationPipeline._registered_impl.items()
    }


_earlier = PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl")
if getattr(_earlier, "__name__", None) == PlumPartSegmentationPipeline.__name__:
    del PIPELINE_REGISTRY.supported_tasks[
        TASK
    ]  # this file imported again (a checkpoint's copy): replace it quietly
PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=PlumPartSegmentationPipeline, pt_model=AutoModel, type="multimodal"
)
