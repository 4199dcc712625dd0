# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PLUM processor: CLIP image processing, SAM preprocessing, the tokenizer, and LLaVA-v1 conversations with
LM labels and BIO span labels built from fast-tokenizer offsets."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from .configuration_plum import check_transformers_version  # noqa: F401  (one line outside the supported range)

IGNORE_INDEX = -100
TAG_O, TAG_B, TAG_I = 0, 1, 2
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 8192


def to_rgb(image, name: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image (any mode) or an `(H, W[, C])` uint8 array, with a clear error otherwise.

    16-bit greyscale (`I;16`, `I`) is scaled to 8 bits instead of being clipped; transparency is dropped.
    """
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected an (H, W) or (H, W, 3) uint8 array, got {image.dtype} {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{name}: expected a PIL image or a numpy array, got {type(image).__name__}")
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"{name} is {width}x{height} px; PLUM needs at least {MIN_IMAGE_SIDE} px per side")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ValueError(f"{name} is {width}x{height} px; resize it below {MAX_IMAGE_SIDE} px per side first")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def sam_resized_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size after resizing the longest side to `target` (SAM's ResizeLongestSide)."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def postprocess_masks(low_res, sam_image_size: int, original_size, resized_size):
    """SAM post-processing: upsample low-res mask logits to the SAM input, crop the padding, resize to the image.

    Shapes: `(n, 1, 4h, 4w)` → `(n, 1, H, W)`.
    """
    masks = F.interpolate(low_res, (sam_image_size, sam_image_size), mode="bilinear", align_corners=False)
    masks = masks[..., : int(resized_size[0]), : int(resized_size[1])]
    return F.interpolate(
        masks, (int(original_size[0]), int(original_size[1])), mode="bilinear", align_corners=False
    )


def bio_to_spans(tags) -> list[tuple[int, int]]:
    """Greedily merges contiguous B→I chains into `(start, end)` token spans (end exclusive).

    A `B` always opens a new span (two B in a row are two spans); an `I` continues the open span, and a stray
    `I` after `O` opens one (the usual lenient BIO reading, so a missed B does not lose the part); positions
    tagged `IGNORE_INDEX` close any open span.
    """
    spans, start = [], None
    for position, tag in enumerate(list(tags)):
        tag = int(tag)
        if tag == TAG_B or (tag == TAG_I and start is None):
            if start is not None:
                spans.append((start, position))
            start = position
        elif tag != TAG_I and start is not None:
            spans.append((start, position))
            start = None
    if start is not None:
        spans.append((start, len(tags)))
    return spans


def find_part_spans(answer: str, parts: list[str]) -> list[tuple[int, int]]:
    """Character spans of `parts`, in order, inside `answer`'s part list (after its last ": ", if any).

    Each part is matched as whole words after the previous match, so `head` never matches inside `headlight`.
    """
    spans, cursor = [], answer.rfind(": ") + 2 if ": " in answer else 0
    for part in parts:
        match = re.compile(r"(?<!\w)" + re.escape(part) + r"(?!\w)").search(answer, cursor)
        if match is None:
            raise ValueError(
                f"part {part!r} does not occur in the answer {answer!r} (after position {cursor})"
            )
        spans.append((match.start(), match.end()))
        cursor = match.end()
    return spans


SPAN_EDGES = " ,.;:!?"  # what a token may carry around a word, which a span's text leaves out


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """`(start, end)` narrowed past surrounding spaces and punctuation (`" body,"` → `"body"`)."""
    while start < end and text[start] in SPAN_EDGES:
        start += 1
    while end > start and text[end - 1] in SPAN_EDGES:
        end -= 1
    return start, end


def token_span(offsets, char_start: int, char_end: int, text: str) -> tuple[int, int]:
    """The `(start, end)` token span (end exclusive) of the tokens overlapping characters `[char_start, char_end)`."""
    tokens = [i for i, (s, e) in enumerate(offsets) if e > s and s < char_end and e > char_start]
    if not tokens:
        raise ValueError(f"characters {char_start}-{char_end} of {text!r} fall on no token")
    return tokens[0], tokens[-1] + 1


class PlumProcessor(ProcessorMixin):
    r"""
    Prepares PLUM inputs: CLIP `pixel_values`, SAM `sam_pixel_values` (longest side resized to `sam_image_size`,
    normalised, zero-padded bottom/right), and LLaVA-v1 conversations
    (`USER: <image>\n{question} ASSISTANT: {answer}</s>`, more turns for part-whole questions) with `labels`
    (loss on assistant turns only) and `span_labels` (B/I on the answer's part names, O on the rest of the
    answers, -100 elsewhere).

    Args:
        image_processor ([`CLIPImageProcessor`]): the CLIP image processor.
        tokenizer ([`PreTrainedTokenizerFast`]): a fast tokenizer (offsets are needed for span labels).
        sam_image_size (`int`, *optional*, defaults to 1024): SAM input resolution.
        num_image_tokens (`int`, *optional*, defaults to 576): copies of the image token per image (the CLIP
            patch count, `config.llava_config.image_seq_length`).
        image_token (`str`, *optional*, defaults to `"<image>"`): the image placeholder token.
        max_length (`int`, *optional*, defaults to 512): the text budget in tokens, image tokens not counted (the
            paper's 512 is for text; LLaVA-1.5 adds 576 image tokens). Longer conversations raise an error instead
            of being cut (a cut would misalign spans and masks).
        system_prompt (`str`, *optional*): text before the first `USER:` turn, followed by a space (the reference
            PLUM's LLaVA-v1 template opens with "A chat between a curious human and an artificial intelligence
            assistant. ..."; LLaVA-1.5's own template has none).
        image_start_token, image_end_token (`str`, *optional*): tokens around the image tokens (`<im_start>` /
            `<im_end>` in the reference PLUM); none by default.
        seg_token (`str`, *optional*): for a model with `segmentation_query="seg_token"` (LISA's way, kept for the
            ablation): this token is written after each tagged part name of an answer, and it, not the name, is the
            part's span.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        sam_image_size: int = 1024,
        num_image_tokens: int = 576,
        image_token: str = "<image>",
        max_length: int = 512,
        system_prompt: str | None = None,
        image_start_token: str | None = None,
        image_end_token: str | None = None,
        seg_token: str | None = None,
        **kwargs,
    ):
        self.sam_image_size = sam_image_size
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        self.seg_token = seg_token
        super().__init__(image_processor, tokenizer, **kwargs)

    # -- images --------------------------------------------------------------------------------------------

    def sam_preprocess(self, image: Image.Image):
        """`(3, S, S)` SAM input, `(H, W)` original size and `(h, w)` size of the image inside the input."""
        width, height = image.size
        resized = sam_resized_size(height, width, self.sam_image_size)
        array = np.asarray(image.resize((resized[1], resized[0]), Image.BILINEAR), dtype=np.float32)
        array = (array - np.array(SAM_PIXEL_MEAN, np.float32)) / np.array(SAM_PIXEL_STD, np.float32)
        padded = np.zeros((self.sam_image_size, self.sam_image_size, 3), np.float32)
        padded[: resized[0], : resized[1]] = array
        return torch.from_numpy(padded).permute(2, 0, 1), (height, width), resized

    def images(self, images) -> dict:
        """CLIP and SAM inputs for a list of images."""
        rgb = [to_rgb(image, f"image {i}") for i, image in enumerate(images)]
        pixel_values = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        sam = [self.sam_preprocess(image) for image in rgb]
        return {
            "pixel_values": pixel_values,
            "sam_pixel_values": torch.stack([s[0] for s in sam]),
            "original_sizes": torch.tensor([s[1] for s in sam]),
            "resized_sizes": torch.tensor([s[2] for s in sam]),
        }

    def post_process_masks(self, low_res_masks, original_size, resized_size, threshold: float | None = 0.0):
        """Low-res SAM logits `(n, 4h, 4w)` → masks at the original size (bool, or logits with `threshold=None`)."""
        masks = postprocess_masks(
            low_res_masks[:, None].float(), self.sam_image_size, original_size, resized_size
        )[:, 0]
        return masks if threshold is None else masks > threshold

    # -- text ----------------------------------------------------------------------------------------------

    def _segments(self, turns):
        """The conversation as (text, role) pieces; role is "prompt", "answer" or "eos"."""
        image = (
            (self.image_start_token or "")
            + self.image_token * self.num_image_tokens
            + (self.image_end_token or "")
        )
        pieces = [(self.system_prompt + " ", "prompt")] if self.system_prompt else []
        for t, (question, answer) in enumerate(turns):
            prefix = f"USER: {image}\n{question}" if t == 0 else f"USER: {question}"
            pieces.append((prefix + " ASSISTANT:", "prompt"))
            if answer is None:
                break
            pieces.append((" " + answer, "answer"))
            pieces.append((self.tokenizer.eos_token, "eos"))
        return pieces

    def prompt_text(self, turns) -> str:
        return "".join(text for text, _ in self._segments(turns))

    def encode_conversation(self, turns, parts=None):
        """Token ids, LM labels and BIO labels for one conversation.

        Args:
            turns (`list[tuple[str, str | None]]`): (question, answer) per turn; a last answer of `None` leaves
                the conversation open for generation.
            parts (`list[list[str]]`, *optional*): per turn, the part names to tag inside its answer.

        Returns:
            `dict` with `input_ids`, `labels`, `span_labels` (lists) and `spans` (`(start, end)` token spans of the
            tagged parts, in order).
        """
        pieces = self._segments(turns)
        text, roles, answer_index = "", [], 0
        char_spans = []
        for piece, role in pieces:
            start = len(text)
            piece_spans = []
            if role == "answer":
                turn_parts = parts[answer_index] if parts is not None and answer_index < len(parts) else []
                piece_spans = find_part_spans(piece, turn_parts)
                if self.seg_token:
                    piece, piece_spans = self._with_seg_tokens(piece, piece_spans)
                answer_index += 1
            text += piece
            roles.append((start, len(text), role))
            char_spans.extend((start + s, start + e) for s, e in piece_spans)
        encoding = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        self.check_text_length(ids)
        labels, span_labels = [IGNORE_INDEX] * len(ids), [IGNORE_INDEX] * len(ids)
        for i, (start, end) in enumerate(offsets):
            if end <= start:
                continue
            role = next((r for s, e, r in roles if s <= start < e), "prompt")
            if role in ("answer", "eos"):
                labels[i] = ids[i]
                span_labels[i] = TAG_O
        token_spans = []
        for cs, ce in char_spans:
            start, end = token_span(offsets, cs, ce, text)
            span_labels[start] = TAG_B
            span_labels[start + 1 : end] = [TAG_I] * (end - start - 1)
            token_spans.append((start, end))
        return {
            "input_ids": ids,
            "labels": labels,
            "span_labels": span_labels,
            "spans": token_spans,
            "text": text,
            "offsets": offsets,
        }

    def _with_seg_tokens(self, answer: str, spans):
        """`answer` with ` {seg_token}` after each span, and the character spans of those tokens."""
        pieces, seg_spans, cursor = [], [], 0
        for _, end in spans:
            pieces.append(answer[cursor:end] + " ")
            offset = sum(len(p) for p in pieces)
            pieces.append(self.seg_token)
            seg_spans.append((offset, offset + len(self.seg_token)))
            cursor = end
        pieces.append(answer[cursor:])
        return "".join(pieces), seg_spans

    def text_length(self, ids) -> int:
        """Tokens of a sequence that count against `max_length`: all but the image tokens."""
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return sum(1 for i in ids if i != image_id)

    def check_text_length(self, ids):
        length = self.text_length(ids)
        if length > self.max_length:
            raise ValueError(
                f"the conversation is {length} text tokens (image tokens not counted), longer than "
                f"max_length={self.max_length}; shorten it (cutting it would misalign its spans and masks)"
            )

    def __call__(
        self, images=None, conversations=None, parts=None, return_tensors="pt", **kwargs
    ) -> BatchFeature:
        """Batches conversations (right-padded) with their images.

        Args:
            images: one image per conversation (PIL, any mode, or a uint8 array).
            conversations (`list[list[tuple[str, str | None]]]`): per sample, its (question, answer) turns.
            parts (`list[list[list[str]]]`, *optional*): per sample, per turn, the part names to tag.
        """
        if conversations is None:
            raise ValueError(
                "PlumProcessor needs `conversations`: per sample, a list of (question, answer) turns"
            )
        if images is not None and len(images) != len(conversations):
            raise ValueError(f"got {len(images)} images for {len(conversations)} conversations")
        encoded = [
            self.encode_conversation(turns, None if parts is None else parts[i])
            for i, turns in enumerate(conversations)
        ]
        longest = max(len(e["input_ids"]) for e in encoded)
        pad = self.tokenizer.pad_token_id

        def padded(key, value):
            return torch.tensor([e[key] + [value] * (longest - len(e[key])) for e in encoded])

        data = {
            "input_ids": padded("input_ids", pad),
            "attention_mask": torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"])) for e in encoded]
            ),
            "labels": padded("labels", IGNORE_INDEX),
            "span_labels": padded("span_labels", IGNORE_INDEX),
        }
        if images is not None:
            data.update(self.images(images))
        feature = BatchFeature(data=data, tensor_type=None)
        feature["spans"] = [e["spans"] for e in encoded]
        return feature

    def choice_inputs(self, image, turns, choices):
        """Inputs for `PlumForConditionalGeneration.score_choices`: the prompt up to the open assistant turn, and
        each choice's tokens (" {choice}</s>"). `turns` ends with the question being answered (answer `None`)."""
        prompt = self.tokenizer(self.prompt_text(turns), add_special_tokens=True, return_tensors="pt")
        self.check_text_length(prompt["input_ids"][0].tolist())
        choice_ids = [
            self.tokenizer(" " + choice + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            for choice in choices
        ]
        inputs = {
            "input_ids": prompt["input_ids"],
            "attention_mask": prompt["attention_mask"],
            "choice_ids": choice_ids,
        }
        if image is not None:
            inputs.update(self.images([image]))
        return inputs

    def highlight_inputs(self, image, turns, char_spans):
        """Inputs for `segment_spans`: the conversation whose last answer is the user's text, and the token spans
        of `char_spans` (character offsets inside that last answer)."""
        if not char_spans:
            raise ValueError("highlight-to-segment needs at least one character span")
        answer = turns[-1][1]
        if answer is None:
            raise ValueError("the last turn needs the answer text the spans point into")
        for start, end in char_spans:
            if not 0 <= start < end <= len(answer):
                raise ValueError(
                    f"span ({start}, {end}) is empty or outside the answer's {len(answer)} characters"
                )
        encoded = self.encode_conversation(turns)
        answer_start = encoded["text"].rfind(" " + answer) + 1
        spans = [
            token_span(encoded["offsets"], answer_start + start, answer_start + end, encoded["text"])
            for start, end in char_spans
        ]
        inputs = {
            "input_ids": torch.tensor([encoded["input_ids"]]),
            "attention_mask": torch.ones(1, len(encoded["input_ids"]), dtype=torch.long),
            "spans": spans,
        }
        inputs.update(self.images([image]))
        return inputs

    def describe_spans(self, answer_ids, token_spans):
        """Decoded answer text, character spans and span texts for token spans of the answer tokens."""
        text = self.tokenizer.decode(answer_ids, skip_special_tokens=True)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        if encoding["input_ids"] != [i for i in answer_ids if i not in self.tokenizer.all_special_ids]:
            # The decoded text re-tokenises differently: fall back to decoding each span's prefix.
            offsets = None
        char_spans = []
        for start, end in token_spans:
            if offsets is not None and end <= len(offsets):
                char_spans.append((offsets[start][0], offsets[end - 1][1]))
            else:
                begin = len(self.tokenizer.decode(answer_ids[:start], skip_special_tokens=True))
                char_spans.append(
                    (begin, len(self.tokenizer.decode(answer_ids[:end], skip_special_tokens=True)))
                )
        char_spans = [trim_span(text, s, e) for s, e in char_spans]
        return text, char_spans, [text[s:e] for s, e in char_spans]


PlumProcessor.register_for_auto_class()
