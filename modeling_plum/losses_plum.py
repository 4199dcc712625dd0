# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PLUM's losses (paper §4, appendix A): `L = λ_LM·L_LM + λ_span·L_span + λ_KL·L_KL + λ_FTL·L_FocalTversky + λ_BCE·L_BCE`,
Dice in place of Focal-Tversky when that is switched off. The LM loss is transformers' own."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .configuration_plum import PlumConfig
from .processing_plum import IGNORE_INDEX, TAG_B, TAG_I


def focal_tversky_loss(
    logits, targets, alpha: float, beta: float, gamma: float, smooth: float = 1.0, reduce=True
):
    """Focal-Tversky loss, mean over masks (per mask with `reduce=False`). `alpha` weighs false negatives (recall),
    `beta` false positives.

    Args:
        logits, targets: `(num_masks, height, width)`.
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    true_pos = (probs * targets).sum(-1)
    false_neg = ((1 - probs) * targets).sum(-1)
    false_pos = (probs * (1 - targets)).sum(-1)
    tversky = (true_pos + smooth) / (true_pos + alpha * false_neg + beta * false_pos + smooth)
    per_mask = (1 - tversky).clamp(min=0) ** gamma
    return per_mask.mean() if reduce else per_mask


def dice_loss(logits, targets, scale: float = 1000.0, eps: float = 1e-6, reduce=True):
    """LISA's Dice loss (inputs and targets divided by `scale`), mean over masks (per mask with `reduce=False`)."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    per_mask = 1 - (numerator + eps) / (denominator + eps)
    return per_mask.mean() if reduce else per_mask


def sigmoid_bce_loss(logits, targets, reduce=True):
    """Pixel-wise binary cross-entropy, mean over pixels, then over masks (per mask with `reduce=False`)."""
    per_mask = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(-1)
    return per_mask.mean() if reduce else per_mask


def span_loss(span_logits, span_labels, config: PlumConfig):
    """Weighted O / B / I cross-entropy over the sequences that contain a span (the others are not tagged).

    Shapes: `span_logits (batch, seq, 3)`, `span_labels (batch, seq)` (-100 = ignore)."""
    with_spans = ((span_labels == TAG_B) | (span_labels == TAG_I)).any(-1)
    if not with_spans.any():
        return span_logits.sum() * 0.0
    targets = span_labels.masked_fill(~with_spans[:, None], IGNORE_INDEX)
    return F.cross_entropy(
        span_logits.reshape(-1, 3).float(),
        targets.reshape(-1),
        # from the config at every call: a buffer would be left uninitialised by from_pretrained
        weight=torch.tensor(config.span_class_weights, device=span_logits.device, dtype=torch.float32),
        ignore_index=IGNORE_INDEX,
    )


def adapter_layers(module) -> list:
    """peft's adapter layers (LoRA, …) inside `module`; none when peft is absent or unused."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def adapters_disabled(module):
    """Temporarily switches off every peft adapter layer of `module`: the KL teacher is the model without them.
    Yields whether there were any."""
    layers = adapter_layers(module)
    previous = [not layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield bool(layers)
    finally:
        for layer, enabled in zip(layers, previous):
            layer.enable_adapters(enabled)


def kl_loss(student, teacher, positions, config: PlumConfig):
    """`0.5 / σ² · MSE` between the student's and the frozen teacher's hidden states on the span positions."""
    mse = F.mse_loss(student[positions].float(), teacher[positions].float())
    return 0.5 / config.kl_sigma**2 * mse


def mask_losses(pred_masks: list, gt_masks: list, config: PlumConfig):
    """(Focal-Tversky or Dice, BCE), each the mean over every mask of the batch.

    Args:
        pred_masks, gt_masks: per sample, `(num_spans, H, W)` logits and targets (the same shapes).
    """
    predictions, targets = [], []
    for b, (pred, gt) in enumerate(zip(pred_masks, gt_masks)):
        if pred.shape != gt.shape:
            raise ValueError(
                f"sample {b}: {pred.shape[0]} spans were segmented at {tuple(pred.shape[1:])} but "
                f"{gt.shape[0]} ground-truth masks of size {tuple(gt.shape[1:])} were given"
            )
        predictions.extend(pred.float())
        targets.extend(gt.to(device=pred.device, dtype=torch.float32))
    if not predictions:
        zero = pred_masks[0].sum() * 0.0 if pred_masks else torch.zeros(())
        return zero, zero
    # Masks of different images differ in size: per-mask losses for all masks of one size at once, then the mean.
    by_size = {}
    for pred, target in zip(predictions, targets):
        by_size.setdefault(tuple(pred.shape), []).append((pred, target))
    mask_terms, bce_terms = [], []
    for group in by_size.values():
        pred = torch.stack([p for p, _ in group])
        target = torch.stack([t for _, t in group])
        if config.use_focal_tversky:
            alpha, beta, gamma = (
                config.focal_tversky_alpha,
                config.focal_tversky_beta,
                config.focal_tversky_gamma,
            )
            mask_terms.append(focal_tversky_loss(pred, target, alpha, beta, gamma, reduce=False))
        else:
            mask_terms.append(dice_loss(pred, target, config.dice_scale, reduce=False))
        bce_terms.append(sigmoid_bce_loss(pred, target, reduce=False))
    return torch.cat(mask_terms).mean(), torch.cat(bce_terms).mean()


def weighted_loss(losses: dict, config: PlumConfig):
    """The weighted sum of the loss terms that were computed (None where none was)."""
    weights = {
        "lm_loss": config.lm_loss_weight,
        "span_loss": config.span_loss_weight,
        "kl_loss": config.kl_loss_weight,
        "mask_loss": config.focal_tversky_weight if config.use_focal_tversky else config.dice_weight,
        "bce_loss": config.bce_weight,
    }
    terms = [weights[name] * value for name, value in losses.items() if value is not None]
    return sum(terms) if terms else None
