"""SAM image embeddings, computed once per image and reused across questions, choices and spans: the one owner of
them (as `segment_anything.SamPredictor` owns its image embedding), used by the evaluation library, training with a
frozen SAM encoder, and the app."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from PIL import Image


def image_key(image: Image.Image) -> str:
    """A key for an image's content (mode, size and pixels): equal images share their embedding, whatever their id."""
    digest = hashlib.sha1(repr((image.mode, image.size)).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class ImageEmbeddingCache:
    """Least-recently-used SAM embeddings of up to `capacity` images, keyed by `image_key`.

    Args:
        model: a `PlumForConditionalGeneration` (its `get_image_embeddings` computes what is missing).
        capacity: how many images' embeddings are kept (each `(sam_prompt_dim, h, w)`: 64 KB for the tiny model,
            4 MB for SAM ViT-H in float32).
    """

    def __init__(self, model, capacity: int = 64):
        if capacity < 1:
            raise ValueError(f"an embedding cache needs room for at least one image, got capacity={capacity}")
        self.model, self.capacity = model, capacity
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoder_calls = 0  # images encoded (each call of the SAM encoder counts its images)

    def __len__(self) -> int:
        return len(self._embeddings)

    @torch.no_grad()
    def embeddings(self, images: list[Image.Image], sam_pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch, C, h, w)` embeddings of `images`, whose SAM inputs are `sam_pixel_values (batch, 3, S, S)`; the
        images not in the cache are encoded together in one call."""
        keys = [image_key(image) for image in images]
        first = {}  # each image not in the cache, at its first position in the batch
        for i, key in enumerate(keys):
            if key not in self._embeddings:
                first.setdefault(key, i)
        missing = list(first.values())
        if missing:
            computed = self.model.get_image_embeddings(sam_pixel_values[missing])
            self.encoder_calls += len(missing)
            for i, embedding in zip(missing, computed):
                self._embeddings[keys[i]] = embedding
        for key in keys:
            self._embeddings.move_to_end(key)
        result = torch.stack([self._embeddings[key] for key in keys])
        while len(self._embeddings) > max(self.capacity, len(set(keys))):
            self._embeddings.popitem(last=False)
        return result
