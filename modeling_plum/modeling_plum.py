# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PLUM: a segmenting multimodal model that tags the spans of its own answer (paper §4, appendix A).

Reads top to bottom: the building blocks of the language side (span tagger, query projector), the outputs, then
`PlumForConditionalGeneration`. The multimodal backbone is `transformers`' LLaVA; SAM and the feedback loop are in
`segmentation_plum.py`, the losses in `losses_plum.py`, BIO tags → spans in `processing_plum.py`, choice scoring with a
shared prefix in `scoring_plum.py`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, LlavaForConditionalGeneration, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_plum import PlumConfig
from .losses_plum import adapters_disabled, kl_loss, mask_losses, span_loss, weighted_loss
from .pipeline_plum import custom_pipelines  # registers the pipeline; save_pretrained copies its file
from .processing_plum import IGNORE_INDEX, TAG_B, TAG_I, bio_to_spans
from .scoring_plum import shared_prefix_log_likelihoods
from .segmentation_plum import (
    PlumFiLM,
    PlumMaskFeedbackPooler,
    build_sam,
    decode_with_feedback,
    encode_image,
    masks_at_image_size,
)

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


class PlumSpanTagger(nn.Module):
    """Tags every token O / B / I: one bidirectional transformer encoder layer over the last hidden states (so a
    token sees the words after it, which the causal LM cannot), then a token-wise 2-layer MLP classifier. The
    layout is the reference implementation's (`bio_encoder`, `token_to_mask_fcs`), so its checkpoints import.

    Shapes: `hidden_states (batch, seq, hidden)`, `attention_mask (batch, seq)` → `(batch, seq, 3)`.
    """

    def __init__(self, config: PlumConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.encoder = nn.TransformerEncoderLayer(
            d_model=hidden,
            nhead=config.span_num_heads,
            dim_feedforward=config.span_ffn_dim,
            dropout=config.span_dropout,
            batch_first=True,
        )
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, hidden_states, attention_mask=None):
        padding = None if attention_mask is None else attention_mask == 0
        # A float key-padding mask keeps the fused fast path off, which does not support autograd here.
        x = self.encoder(hidden_states, src_key_padding_mask=padding)
        return self.classifier(x)


class PlumQueryProjector(nn.Module):
    """Projects last-layer hidden states to SAM's prompt space: `(…, hidden)` → `(…, sam_prompt_dim)`."""

    def __init__(self, config: PlumConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.layers = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, config.sam_prompt_dim)
        )

    def forward(self, hidden_states):
        return self.layers(hidden_states)


class PlumLinearProjector(nn.Module):
    """The single linear projector of LLaVA-LLaMA-2 lightning (the reference PLUM's base; `projector_type="linear"`),
    in place of LLaVA-1.5's two-layer MLP: `(…, vision_hidden)` → `(…, text_hidden)`."""

    def __init__(self, config: PlumConfig):
        super().__init__()
        self.linear = nn.Linear(config.llava_config.vision_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features):
        return self.linear(image_features)


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PlumOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor`, *optional*): the weighted sum of the components below.
        lm_loss, span_loss, kl_loss, mask_loss, bce_loss (`torch.FloatTensor`, *optional*): unweighted components
            (`mask_loss` is Focal-Tversky, or Dice when that is switched off).
        logits (`torch.FloatTensor` of shape `(batch, seq, vocab)`): language-model logits.
        span_logits (`torch.FloatTensor` of shape `(batch, seq, 3)`): O / B / I logits (None with
            `segmentation_query="seg_token"`).
        spans (`list[list[tuple[int, int]]]`): per sample, the token spans that were segmented.
        pred_masks (`list[torch.FloatTensor]`): per sample, `(num_spans, height, width)` mask logits at the
            original image size.
        low_res_masks (`list[torch.FloatTensor]`): per sample, `(num_spans, 4h, 4w)` SAM low-resolution logits.
        hidden_states (`torch.FloatTensor` of shape `(batch, seq, hidden)`): last-layer hidden states.
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    span_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    mask_loss: torch.FloatTensor | None = None
    bce_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    span_logits: torch.FloatTensor | None = None
    spans: list | None = None
    pred_masks: list | None = None
    low_res_masks: list | None = None
    hidden_states: torch.FloatTensor | None = None


@dataclass
class PlumSegmentationOutput(ModelOutput):
    """
    Args:
        sequences (`torch.LongTensor` of shape `(1, seq)`): prompt and answer token ids.
        answer_start (`int`): index of the first answer token in `sequences`.
        spans (`list[tuple[int, int]]`): token spans (end exclusive) of the answer that were segmented.
        masks (`torch.BoolTensor` of shape `(num_spans, height, width)`): masks at the original image size.
        mask_logits (`torch.FloatTensor` of shape `(num_spans, height, width)`).
        text (`str`, *optional*): the decoded answer (when a processor was given).
        char_spans (`list[tuple[int, int]]`, *optional*): character offsets of each span in `text`.
        span_texts (`list[str]`, *optional*): the text of each span.
    """

    sequences: torch.LongTensor | None = None
    answer_start: int | None = None
    spans: list | None = None
    masks: torch.BoolTensor | None = None
    mask_logits: torch.FloatTensor | None = None
    text: str | None = None
    char_spans: list | None = None
    span_texts: list | None = None


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


def _init_head(module: nn.Module, std: float):
    """Linear layers ~ N(0, std) with zero bias, attention in-projections Xavier, LayerNorms identity."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                init.zeros_(layer.bias)
        elif isinstance(layer, nn.MultiheadAttention):
            init.xavier_uniform_(layer.in_proj_weight)
            init.zeros_(layer.in_proj_bias)
        elif isinstance(layer, nn.LayerNorm):
            init.ones_(layer.weight)
            init.zeros_(layer.bias)


class PlumPreTrainedModel(PreTrainedModel):
    config_class = PlumConfig
    base_model_prefix = "plum"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer", "Block"]
    _supports_sdpa = True
    # SAM builds its positional-encoding grid in float32 and multiplies it with this random projection.
    _keep_in_fp32_modules_strict = ["positional_encoding_gaussian_matrix"]

    def _init_weights(self, module):
        """Initialises PLUM's own heads (also when `from_pretrained` finds them missing, or a converter builds the
        model on the meta device). SAM modules and the LLaVA backbone come from their checkpoints."""
        std = self.config.text_config.initializer_range
        if isinstance(module, (PlumSpanTagger, PlumQueryProjector, PlumLinearProjector)):
            _init_head(module, std)
        elif isinstance(module, PlumFiLM):
            init.zeros_(module.proj.weight)  # the identity
            init.zeros_(module.proj.bias)
        elif isinstance(module, PlumMaskFeedbackPooler):
            init.normal_(module.patch_queries, std=0.02)
            _init_head(module.attention, std)
            init.zeros_(module.attention.out_proj.weight)  # passes nothing on at first
            init.zeros_(module.attention.out_proj.bias)


class PlumForConditionalGeneration(PlumPreTrainedModel, GenerationMixin):
    """PLUM: LLaVA + SAM, with a BIO span tagger instead of a `[SEG]` token, span-mean mask queries, a mask
    feedback loop, and a KL constraint that keeps span hidden states near the frozen language model."""

    def __init__(self, config: PlumConfig):
        super().__init__(config)
        config.sync_sub_config_dtypes()
        config.custom_pipelines = custom_pipelines()  # for pipeline("part-segmentation", model=folder)
        self.llava = LlavaForConditionalGeneration(config.llava_config)
        if config.projector_type == "linear":
            self.llava.model.multi_modal_projector = PlumLinearProjector(config)
        self.sam_image_encoder, self.sam_prompt_encoder, self.sam_mask_decoder = build_sam(config)
        self.span_tagger = PlumSpanTagger(config)
        self.query_projector = PlumQueryProjector(config)
        self.feedback_pooler = PlumMaskFeedbackPooler(config) if config.use_feedback else None
        self.kl_teacher = (
            copy.deepcopy(self.llava.model.language_model) if config.kl_frozen_snapshot else None
        )
        if self.kl_teacher is not None:
            self.kl_teacher.requires_grad_(False)
        for (
            block
        ) in self.sam_image_encoder.blocks:  # plain SAM modules: the flag lets transformers switch them
            block.gradient_checkpointing = False
        self.post_init()

    # -- plumbing ------------------------------------------------------------------------------------------

    def get_input_embeddings(self):
        return self.llava.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.llava.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.llava.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.llava.set_output_embeddings(value)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # SAM builds its positional-encoding grid in float32: keep its random projection in float32 too, so
        # `model.to(torch.bfloat16)` works (the encoding is cast to the model's dtype where it is used).
        pe_layer = self.sam_prompt_encoder.pe_layer
        pe_layer.positional_encoding_gaussian_matrix = pe_layer.positional_encoding_gaussian_matrix.float()
        return self

    def _float_input(self, tensor, module: nn.Module):
        """A float input (the processor gives float32 on the CPU) on `module`'s device, in its dtype."""
        if tensor is None:
            return None
        weight = next(module.parameters())
        return tensor.to(device=weight.device, dtype=weight.dtype)

    def _zero_touch(self):
        """`0 ×` one element of each trainable parameter of the modules a batch may leave unused (the feedback pooler:
        no answer with two parts; SAM's decoder and prompt encoder, the query projector: no part at all), so that
        every trainable parameter gets a (zero) gradient, which DDP requires without `find_unused_parameters`."""
        modules = (self.feedback_pooler, self.sam_mask_decoder, self.sam_prompt_encoder, self.query_projector)
        params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
        return torch.stack([p.reshape(-1)[0].float() for p in params]).sum() * 0.0 if params else None

    def _prompt_inputs(self, input_ids, attention_mask, pixel_values):
        """Token ids and mask on the model's device, CLIP pixels in the vision tower's dtype."""
        device = self.get_input_embeddings().weight.device
        return (
            input_ids.to(device),
            None if attention_mask is None else attention_mask.to(device),
            self._float_input(pixel_values, self.llava.model.vision_tower),
        )

    def _span_logits(self, hidden_states, attention_mask):
        """The span tagger's O / B / I logits `(batch, seq, 3)`; None for a model that marks its spans with LISA's
        `[SEG]` tokens instead (`segmentation_query="seg_token"`)."""
        if self.config.segmentation_query == "seg_token":
            return None
        return self.span_tagger(hidden_states, attention_mask)

    def _predicted_tags(self, input_ids, span_logits):
        """The B / I / O tags the model predicts per token `(batch, seq)`: the tagger's, or, without a tagger, every
        `[SEG]` token as a one-token span."""
        if span_logits is None:
            return torch.where(input_ids == self.config.seg_token_index, TAG_B, IGNORE_INDEX)
        return span_logits.argmax(-1)

    def sync_kl_teacher(self):
        """Copies the current language model into the frozen KL teacher (after loading pretrained weights)."""
        if self.kl_teacher is None:
            raise ValueError("this model has no frozen KL teacher (config.kl_frozen_snapshot is False)")
        self.kl_teacher.load_state_dict(self.llava.model.language_model.state_dict())

    # -- SAM -----------------------------------------------------------------------------------------------

    def get_image_embeddings(self, sam_pixel_values):
        """SAM image embeddings, computed once per image and reusable across questions, choices and spans.

        Shapes: `(batch, 3, sam_image_size, sam_image_size)` → `(batch, sam_prompt_dim, h, w)`.
        """
        pixels = self._float_input(sam_pixel_values, self.sam_image_encoder)
        grad = torch.is_grad_enabled() and self.config.train_sam_image_encoder
        return encode_image(self.sam_image_encoder, pixels, grad)

    def decode_masks_batch(self, image_embeddings, queries, original_sizes, resized_sizes):
        """Decodes one mask per span query, in order, each conditioned on the image's masks before it (the feedback
        loop, `segmentation_plum.decode_with_feedback`); span k of every image is decoded in one batch.

        Args:
            image_embeddings: `(batch, prompt_dim, h, w)` SAM embeddings.
            queries: per image, `(num_spans, prompt_dim)` span queries.
            original_sizes, resized_sizes: per image, `(height, width)` of the image and of its SAM input.

        Returns:
            `(mask_logits, low_res)`: per image, `(num_spans, H, W)` float32 logits at the original size and
            `(num_spans, 4h, 4w)` float32 low-resolution logits, whatever the model's dtype.
        """
        image_embeddings = self._float_input(image_embeddings, self.sam_mask_decoder)
        queries = [q.to(image_embeddings.dtype) for q in queries]
        low_res = decode_with_feedback(
            self.config,
            self.sam_prompt_encoder,
            self.sam_mask_decoder,
            self.feedback_pooler,
            image_embeddings,
            queries,
        )
        full = masks_at_image_size(self.config, low_res, original_sizes, resized_sizes)
        return full, [m[:, 0].float() for m in low_res]

    def decode_masks(self, image_embedding, queries, original_size, resized_size):
        """`decode_masks_batch` for one image: `(1, C, h, w)`, `(num_spans, C)` → `(num_spans, H, W)`, low-res."""
        full, low = self.decode_masks_batch(image_embedding, [queries], [original_size], [resized_size])
        return full[0], low[0]

    # -- language model ------------------------------------------------------------------------------------

    def _language_forward(self, input_ids, attention_mask, pixel_values, **kwargs):
        kwargs.setdefault("use_cache", False)  # hidden states only; cached decoding goes through `self.llava`
        return self.llava.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=self._float_input(pixel_values, self.llava.model.vision_tower),
            **kwargs,
        )

    def _teacher_hidden_states(self, input_ids, attention_mask, image_outputs):
        """Last hidden states of the frozen language model: the same model with adapters disabled, or the
        explicit frozen snapshot. `None` when there is no teacher (no adapters, no snapshot)."""
        with torch.no_grad():
            if self.kl_teacher is not None:
                embeds = self.get_input_embeddings()(input_ids)
                features = torch.cat(image_outputs.pooler_output, dim=0).to(embeds.dtype)
                mask = self.llava.model.get_placeholder_mask(input_ids, embeds, features)
                embeds = embeds.masked_scatter(mask, features)
                return self.kl_teacher(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
            with adapters_disabled(self.llava) as has_adapters:
                if not has_adapters:
                    return None
                out = self._language_forward(
                    input_ids, attention_mask, None, mm_encoder_outputs={"image": image_outputs}
                )
                return out.last_hidden_state

    def span_queries(self, hidden_states, spans):
        """Mean of the projected hidden states of each span's tokens: `(num_spans, prompt_dim)`."""
        projected = self.query_projector(hidden_states)  # (seq, prompt_dim)
        if not spans:
            return projected.new_zeros((0, projected.shape[-1]))
        return torch.stack([projected[start:end].mean(0) for start, end in spans])

    # -- training forward ----------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        sam_pixel_values: torch.Tensor | None = None,
        original_sizes: torch.Tensor | None = None,
        resized_sizes: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        span_labels: torch.LongTensor | None = None,
        gt_masks: list | None = None,
        image_embeddings: torch.Tensor | None = None,
        spans: list | None = None,
        output_logits: bool = True,
        **kwargs,
    ) -> PlumOutput:
        """
        Args:
            input_ids (`(batch, seq)`), attention_mask (`(batch, seq)`): the conversation, `<image>` expanded.
            pixel_values (`(batch, 3, H_clip, W_clip)`): CLIP input.
            sam_pixel_values (`(batch, 3, S, S)`): SAM input (or pass `image_embeddings`).
            original_sizes, resized_sizes (`(batch, 2)`): image size and its size inside the SAM input.
            labels (`(batch, seq)`): LM targets, `-100` outside the assistant turns.
            span_labels (`(batch, seq)`): O=0 / B=1 / I=2 targets, `-100` = ignore.
            gt_masks (`list` of `(num_spans, H, W)` tensors): ground-truth masks per sample, in span order.
            image_embeddings (`(batch, prompt_dim, h, w)`, *optional*): precomputed SAM embeddings.
            spans (`list[list[tuple[int, int]]]`, *optional*): token spans to segment; default: from
                `span_labels` when given, else from the tagger's own predictions.
            output_logits (`bool`, *optional*, defaults to `True`): compute the LM logits over the whole sequence
                (always done when `labels` are given); segmentation alone does not need them.

        Inputs may be the processor's CPU float32 tensors: they are moved to the model's device and dtype here;
        mask logits and losses come back in float32.
        """
        input_ids, attention_mask, _ = self._prompt_inputs(input_ids, attention_mask, None)
        labels, span_labels = (None if t is None else t.to(input_ids.device) for t in (labels, span_labels))
        language = self._language_forward(input_ids, attention_mask, pixel_values, **kwargs)
        hidden = language.last_hidden_state
        logits = self.llava.lm_head(hidden) if output_logits or labels is not None else None
        span_logits = self._span_logits(hidden, attention_mask)
        losses = {"lm_loss": None, "span_loss": None, "kl_loss": None, "mask_loss": None, "bce_loss": None}
        if labels is not None:
            losses["lm_loss"] = self.llava.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size
            )
        if span_labels is not None:
            losses["span_loss"] = (
                None if span_logits is None else span_loss(span_logits, span_labels, self.config)
            )
            losses["kl_loss"] = self._kl_loss(
                hidden, span_labels, input_ids, attention_mask, language.image_outputs
            )
        if spans is None:
            spans = self._spans(input_ids, attention_mask, span_labels, span_logits)
        pred_masks = low_res_masks = None
        if sam_pixel_values is not None or image_embeddings is not None:
            if image_embeddings is None:
                image_embeddings = self.get_image_embeddings(sam_pixel_values)
            queries = [self.span_queries(hidden[b], spans[b]) for b in range(input_ids.shape[0])]
            pred_masks, low_res_masks = self.decode_masks_batch(
                image_embeddings, queries, original_sizes, resized_sizes
            )
            if gt_masks is not None:
                losses["mask_loss"], losses["bce_loss"] = mask_losses(pred_masks, gt_masks, self.config)
        loss = weighted_loss(losses, self.config)
        if loss is not None and self.training and torch.is_grad_enabled():
            touch = self._zero_touch()
            loss = loss if touch is None else loss + touch
        return PlumOutput(
            loss=loss,
            **losses,
            logits=logits,
            span_logits=span_logits,
            spans=spans,
            pred_masks=pred_masks,
            low_res_masks=low_res_masks,
            hidden_states=hidden,
        )

    def _spans(self, input_ids, attention_mask, span_labels, span_logits) -> list:
        """Per sample, the token spans to segment: the labelled ones when given, else the model's own tags."""
        if span_labels is not None:
            return [bio_to_spans(row.tolist()) for row in span_labels]
        tags = self._predicted_tags(input_ids, span_logits)
        if attention_mask is not None:
            tags = tags.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return [bio_to_spans(row.tolist()) for row in tags]

    def _kl_loss(self, hidden, span_labels, input_ids, attention_mask, image_outputs):
        """The KL constraint on the span positions (0 when no span, no teacher or λ_KL = 0)."""
        positions = (span_labels == TAG_B) | (span_labels == TAG_I)
        teacher = None
        if self.config.kl_loss_weight > 0 and positions.any():
            teacher = self._teacher_hidden_states(input_ids, attention_mask, image_outputs)
        if teacher is None:
            return hidden.new_zeros(()).float()
        return kl_loss(hidden, teacher, positions, self.config)

    # -- inference -----------------------------------------------------------------------------------------

    def generate(self, *args, **kwargs):
        """Text generation (delegates to the LLaVA backbone); see `answer_and_segment` for answers with masks."""
        return self.llava.generate(*args, **kwargs)

    @torch.no_grad()
    def segment_spans(
        self,
        input_ids,
        attention_mask,
        pixel_values,
        spans,
        original_size,
        resized_size,
        sam_pixel_values=None,
        image_embeddings=None,
    ) -> PlumSegmentationOutput:
        """Highlight-to-segment: masks for user-chosen token spans of one conversation (batch of 1).

        Args:
            spans (`list[tuple[int, int]]`): token spans (end exclusive) inside `input_ids[0]`.
        """
        length = input_ids.shape[1]
        for start, end in spans:
            if not 0 <= start < end <= length:
                raise ValueError(f"span ({start}, {end}) is empty or outside the {length} tokens of the text")
        out = self(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            sam_pixel_values=sam_pixel_values,
            image_embeddings=image_embeddings,
            spans=[list(spans)],
            original_sizes=torch.as_tensor(original_size).reshape(1, 2),
            resized_sizes=torch.as_tensor(resized_size).reshape(1, 2),
            output_logits=False,
        )
        logits = out.pred_masks[0]
        return PlumSegmentationOutput(
            sequences=input_ids,
            spans=list(spans),
            masks=logits > self.config.mask_threshold,
            mask_logits=logits,
        )

    @torch.no_grad()
    def answer_and_segment(
        self,
        input_ids,
        attention_mask,
        pixel_values,
        original_size,
        resized_size,
        sam_pixel_values=None,
        image_embeddings=None,
        max_new_tokens: int = 64,
        processor=None,
        **generate_kwargs,
    ) -> PlumSegmentationOutput:
        """Generates the answer, tags its spans with the span tagger and segments them (batch of 1).

        With a `processor`, the output also carries the answer text, character offsets and span texts. The
        language model runs once over the generated conversation: its hidden states give both the tags and the
        span queries.
        """
        input_ids, attention_mask, pixel_values = self._prompt_inputs(input_ids, attention_mask, pixel_values)
        sequences = self.llava.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **generate_kwargs,
        )
        answer_start = input_ids.shape[1]
        full_mask = torch.ones_like(sequences)
        if image_embeddings is None:
            image_embeddings = self.get_image_embeddings(sam_pixel_values)
        hidden = self._language_forward(sequences, full_mask, pixel_values).last_hidden_state
        tags = self._predicted_tags(sequences, self._span_logits(hidden, full_mask))[0].tolist()
        # only the answer's words are segmented: not the prompt, not end-of-sequence or padding tokens
        special = {self.config.text_config.eos_token_id, self.config.text_config.pad_token_id}
        tags = [
            IGNORE_INDEX if position < answer_start or token in special else tag
            for position, (tag, token) in enumerate(zip(tags, sequences[0].tolist()))
        ]
        spans = bio_to_spans(tags)
        logits, _ = self.decode_masks_batch(
            image_embeddings, [self.span_queries(hidden[0], spans)], [original_size], [resized_size]
        )
        result = PlumSegmentationOutput(
            sequences=sequences,
            answer_start=answer_start,
            spans=spans,
            masks=logits[0] > self.config.mask_threshold,
            mask_logits=logits[0],
        )
        if processor is not None:
            result.text, result.char_spans, result.span_texts = processor.describe_spans(
                sequences[0, answer_start:].tolist(), [(s - answer_start, e - answer_start) for s, e in spans]
            )
        return result

    @torch.no_grad()
    def score_choices(self, input_ids, attention_mask, pixel_values, choice_ids, pad_token_id: int = 0):
        """Mean token log-likelihood of each answer choice given the image and question (batch of 1 prompt).

        The shared image + question prefix runs once; its KV cache is reused by every choice, which run
        together as one padded batch.

        Args:
            input_ids, attention_mask (`(1, prefix_len)`), pixel_values (`(1, 3, H, W)`): the prompt.
            choice_ids (`list[list[int]]`): the token ids of each choice (what follows the prompt).

        Returns:
            `torch.FloatTensor` of shape `(num_choices,)`.
        """
        if input_ids.shape[0] != 1:
            raise ValueError(
                f"score_choices scores the choices of one prompt, got a batch of {input_ids.shape[0]}"
            )
        if not choice_ids or any(len(c) == 0 for c in choice_ids):
            raise ValueError("every answer choice needs at least one token")
        input_ids, attention_mask, pixel_values = self._prompt_inputs(input_ids, attention_mask, pixel_values)
        prefix = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        return shared_prefix_log_likelihoods(self.llava, prefix, choice_ids, pad_token_id)


PlumConfig.register_for_auto_class()
PlumForConditionalGeneration.register_for_auto_class("AutoModel")
