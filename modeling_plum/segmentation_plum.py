# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PLUM's segmentation head: span queries → SAM masks, one span after another, each conditioned on the masks before it
(the feedback loop, paper §4). SAM's image encoder, prompt encoder and mask decoder are `segment_anything`'s own
modules, built as `segment_anything.build_sam` builds them; the FiLM layers and the feedback pooler are PLUM's.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from .configuration_plum import PlumConfig
from .processing_plum import postprocess_masks


def build_sam(config: PlumConfig) -> tuple[ImageEncoderViT, PromptEncoder, MaskDecoder]:
    """SAM's image encoder, prompt encoder and mask decoder at the config's geometry, built as
    `segment_anything.build_sam` builds them (so that an official checkpoint's state dict loads into them)."""
    size = config.sam_embedding_size
    image_encoder = ImageEncoderViT(
        img_size=config.sam_image_size,
        patch_size=config.sam_patch_size,
        embed_dim=config.sam_encoder_dim,
        depth=config.sam_encoder_depth,
        num_heads=config.sam_encoder_heads,
        mlp_ratio=4,
        out_chans=config.sam_prompt_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=config.sam_window_size,
        global_attn_indexes=tuple(config.sam_global_attn_indexes),
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.sam_prompt_dim,
        image_embedding_size=(size, size),
        input_image_size=(config.sam_image_size, config.sam_image_size),
        mask_in_chans=config.sam_mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=config.sam_decoder_depth,
            embedding_dim=config.sam_prompt_dim,
            mlp_dim=config.sam_decoder_mlp_dim,
            num_heads=config.sam_decoder_heads,
        ),
        transformer_dim=config.sam_prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=config.sam_prompt_dim,
    )
    return image_encoder, prompt_encoder, mask_decoder


class PlumFiLM(nn.Module):
    """Feature-wise linear modulation: `x * (1 + scale(q)) + shift(q)` per channel, from a span query `q`. It starts
    as the identity (`_init_weights` zeroes its projection), so SAM's pretrained mask path is unchanged."""

    def __init__(self, query_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(query_dim, 2 * channels)

    def forward(self, x, query):
        scale, shift = self.proj(query).chunk(2, dim=-1)
        return x * (1 + scale[..., None, None]) + shift[..., None, None]


class PlumMaskFeedbackPooler(nn.Module):
    """Turns the masks of earlier spans into the dense prompt of the next span.

    Each earlier mask (low-res logits) goes through SAM's mask-downscaling convolutions (the prompt encoder's
    own layers) with a FiLM layer, conditioned on that span's query, after each conv + LayerNorm; the dense
    positional encoding is added; then a learned query per patch attends over the stack of earlier masks. The
    attention's output projection starts at zero (`_init_weights`): early, half-trained masks add no noise.

    Shapes: `masks (batch, num_earlier, 1, 4h, 4w)`, `queries (batch, num_earlier, prompt_dim)`,
    `dense_pe (1, prompt_dim, h, w)` → `(batch, prompt_dim, h, w)`. Parameters follow the reference
    `TemporalMaskPooler` layout.
    """

    def __init__(self, config: PlumConfig):
        super().__init__()
        dim, size = config.sam_prompt_dim, config.sam_embedding_size
        self.film = nn.ModuleList(
            [PlumFiLM(dim, config.sam_mask_in_chans // 4), PlumFiLM(dim, config.sam_mask_in_chans)]
        )
        self.patch_queries = nn.Parameter(torch.empty(size * size, 1, dim))  # one query per patch
        self.attention = nn.MultiheadAttention(dim, config.feedback_num_heads, batch_first=True)

    def encode(self, mask_downscaling: nn.Sequential, masks, queries, dense_pe=None):
        """One earlier mask per row: `masks (n, 1, 4h, 4w)`, `queries (n, prompt_dim)` → keys `(n, prompt_dim, h, w)`.
        A mask is encoded once, when it is predicted, and serves every later span of its image."""
        conv1, norm1, act1, conv2, norm2, act2, conv3 = mask_downscaling
        x = act1(self.film[0](norm1(conv1(masks)), queries))
        x = act2(self.film[1](norm2(conv2(x)), queries))
        x = conv3(x)
        return x if dense_pe is None else x + dense_pe

    def pool(self, keys):
        """`keys (batch, k, prompt_dim, h, w)` (encoded earlier masks) → dense prompt `(batch, prompt_dim, h, w)`."""
        batch, k, channels, h, w = keys.shape
        # One attention per image and patch, over that image's k earlier masks.
        keys = keys.reshape(batch, k, channels, h * w).permute(0, 3, 1, 2).reshape(batch * h * w, k, channels)
        pooled, _ = self.attention(self.patch_queries.repeat(batch, 1, 1), keys, keys, need_weights=False)
        return pooled.reshape(batch, h, w, channels).permute(0, 3, 1, 2)

    def forward(self, mask_downscaling, masks, queries, dense_pe):
        """`masks (batch, k, 1, 4h, 4w)`, `queries (batch, k, prompt_dim)` → `(batch, prompt_dim, h, w)`."""
        batch, k = masks.shape[:2]
        encoded = self.encode(mask_downscaling, masks.flatten(0, 1), queries.flatten(0, 1), dense_pe)
        return self.pool(encoded.reshape(batch, k, *encoded.shape[1:]))


def encode_image(encoder: ImageEncoderViT, pixels, grad: bool):
    """SAM's image encoder (`ImageEncoderViT.forward`), with gradient checkpointing of each block where the block's
    flag is set and gradients are wanted. Shapes: `(batch, 3, S, S)` → `(batch, prompt_dim, h, w)`."""
    with torch.set_grad_enabled(grad):
        x = encoder.patch_embed(pixels)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block in encoder.blocks:
            if block.gradient_checkpointing and grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return encoder.neck(x.permute(0, 3, 1, 2))


def decode_one_prompt_per_image(decoder: MaskDecoder, image_embeddings, image_pe, sparse, dense):
    """SAM's mask decoder for a batch of images with one prompt each, single-mask output.

    `MaskDecoder.forward` decodes many prompts of one image (it repeats the image embedding per prompt); this runs the
    same modules (its two-way transformer, upscaling and first hypernetwork) over different images at once, which the
    feedback loop needs (span k of every image is decoded together), as does pretraining on prompts of many images.

    Shapes: `image_embeddings (b, C, h, w)`, `sparse (b, tokens, C)`, `dense (b, C, h, w)` → `(b, 1, 4h, 4w)`.
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = image_embeddings + dense
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1, :])  # mask token 0: the single-mask output
    return (hyper.unsqueeze(1) @ upscaled.flatten(2)).reshape(b, 1, *upscaled.shape[-2:])


def decode_with_feedback(
    config: PlumConfig,
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    pooler: PlumMaskFeedbackPooler | None,
    image_embeddings,
    queries,
):
    """One low-resolution mask per span query, in order, each conditioned on the image's masks before it (`pooler`;
    none without the feedback loop); span k of every image is decoded in one batch.

    Args:
        image_embeddings: `(batch, prompt_dim, h, w)`, in the decoder's dtype.
        queries: per image, `(num_spans, prompt_dim)`.

    Returns:
        per image, `(num_spans, 1, 4h, 4w)` low-resolution mask logits (`(0, 1, 4h, 4w)` for an image without spans).
    """
    dtype = image_embeddings.dtype
    dense_pe = prompt_encoder.get_dense_pe().to(dtype)
    size = config.sam_embedding_size
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, size, size).to(dtype)
    counts = [q.shape[0] for q in queries]
    low_res = [[] for _ in queries]
    keys = [[] for _ in queries]  # per image, its earlier masks encoded by the feedback pooler
    for k in range(max(counts, default=0)):
        active = [b for b, n in enumerate(counts) if n > k]
        if k == 0 or pooler is None:
            dense = no_mask.expand(len(active), -1, -1, -1)
        else:
            dense = pooler.pool(torch.stack([torch.stack(keys[b]) for b in active]))
            if config.feedback_add_no_mask:
                dense = dense + no_mask
        sparse = torch.stack([queries[b][k] for b in active]).unsqueeze(1)
        masks = decode_one_prompt_per_image(
            mask_decoder, image_embeddings[active], dense_pe, sparse, dense.to(dtype)
        )
        for i, b in enumerate(active):
            low_res[b].append(masks[i])  # (1, 4h, 4w)
        following = [i for i, b in enumerate(active) if counts[b] > k + 1]  # images with a span k + 1
        if pooler is not None and following:
            # earlier masks enter the loop detached; each is encoded once and serves every later span
            encoded = pooler.encode(
                prompt_encoder.mask_downscaling, masks[following].detach(), sparse[following, 0], dense_pe
            )
            for j, i in enumerate(following):
                keys[active[i]].append(encoded[j])
    side = 4 * size
    return [torch.stack(m) if m else image_embeddings.new_zeros((0, 1, side, side)) for m in low_res]


def masks_at_image_size(config: PlumConfig, low_res: list, original_sizes, resized_sizes) -> list:
    """Per image, `(num_spans, 1, 4h, 4w)` low-res logits → `(num_spans, H, W)` float32 logits at the image's size."""
    full = []
    for masks, original, resized in zip(low_res, original_sizes, resized_sizes):
        if masks.shape[0] == 0:
            full.append(masks.new_zeros((0, *[int(v) for v in original])).float())
        else:
            full.append(postprocess_masks(masks.float(), config.sam_image_size, original, resized)[:, 0])
    return full
