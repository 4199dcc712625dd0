# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""Answer-choice scores: the mean token log-likelihood of each choice after an image + question prefix. The prefix runs
once and its KV cache serves every choice (`shared_prefix_log_likelihoods`, what PLUM's `score_choices` and the
benchmark's scorer for any transformers image-text-to-text model use); `full_forward_log_likelihoods` computes the same
with one full forward per choice, the reference it is tested against."""

from __future__ import annotations

import torch


def shared_prefix_log_likelihoods(model, prefix_inputs: dict, continuations, pad_token_id: int):
    """Mean token log-likelihood of each continuation after one shared prefix (a batch of 1): the prefix runs once,
    and its KV cache, repeated, serves every continuation in one right-padded batch. `model` is any transformers
    causal or image-text-to-text LM taking `cache` and `logits_to_keep`.

    Shapes: `prefix_inputs["input_ids"] (1, prefix_len)`, `continuations` a list of token-id lists → `(num,)`.
    """
    prefix = model(**prefix_inputs, use_cache=True, logits_to_keep=1)
    num, longest = len(continuations), max(len(c) for c in continuations)
    device = prefix_inputs["input_ids"].device
    tokens = torch.full((num, longest), pad_token_id, dtype=torch.long, device=device)
    valid = torch.zeros((num, longest), dtype=torch.bool, device=device)
    for i, ids in enumerate(continuations):
        tokens[i, : len(ids)] = torch.as_tensor(ids, device=device)
        valid[i, : len(ids)] = True
    cache = prefix.cache
    cache.batch_repeat_interleave(num)
    # Right padding after the prefix: real tokens never attend to the pads, which come after them. An unpadded prefix
    # needs no mask at all (the causal mask covers it; models with 3-D RoPE, Qwen2-VL's, then continue their
    # positions from the cache).
    mask = prefix_inputs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        mask = torch.cat([mask.expand(num, -1), torch.ones_like(tokens)], dim=1)
    else:
        mask = None
    out = model(input_ids=tokens, attention_mask=mask, cache=cache, use_cache=False)
    logits = torch.cat([prefix.logits[:, -1:].expand(num, -1, -1), out.logits[:, :-1]], dim=1)
    log_probs = logits.float().log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    return (log_probs * valid).sum(-1) / valid.sum(-1)


@torch.no_grad()
def full_forward_log_likelihoods(model, prefix_inputs: dict, continuations):
    """The same scores as `shared_prefix_log_likelihoods`, one full forward per continuation (slower; its reference).

    Shapes: `prefix_inputs["input_ids"] (1, prefix_len)`, `continuations` a list of token-id lists → `(num,)`.
    """
    input_ids, attention_mask = prefix_inputs["input_ids"], prefix_inputs["attention_mask"]
    scores = []
    for ids in continuations:
        choice = torch.as_tensor([ids], device=input_ids.device)
        full = torch.cat([input_ids, choice], dim=1)
        mask = torch.cat([attention_mask, torch.ones_like(choice)], dim=1)
        logits = model(
            input_ids=full, attention_mask=mask, pixel_values=prefix_inputs.get("pixel_values")
        ).logits
        log_probs = logits[0, input_ids.shape[1] - 1 : -1].float().log_softmax(-1)
        scores.append(log_probs.gather(-1, choice[0, :, None]).mean())
    return torch.stack(scores)
