"""CLIP filtering of image–caption pairs (UIP2P supplement §8.2, after InstructPix2Pix): keep the pairs whose
caption describes the image, by a CLIP cosine similarity of at least 0.2 (the paper: ViT-L/14)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..evaluation.clip_features import clip_image_embeddings, clip_text_embeddings

class ClipFilterResult(NamedTuple):
    similarities: torch.Tensor  # [N] float32 cosine similarity of each image and its caption
    keep: torch.Tensor  # [N] bool: similarity >= threshold


@torch.no_grad()
def clip_filter(images, captions, clip_model, processor_or_tokenizer, image_processor=None, *,
                threshold: float = 0.2, batch_size: int = 32, progress: bool = True) -> ClipFilterResult:
    """CLIP image–caption cosine similarities and the pairs to keep (the paper: ViT-L/14, threshold 0.2).

    ``processor_or_tokenizer`` is a ``CLIPProcessor`` or a tokenizer; with a tokenizer and no
    ``image_processor``, images are preprocessed the standard CLIP way at the model's image size. Images
    (PIL images or paths) are opened one batch at a time."""
    from transformers import CLIPImageProcessor

    from .records import load_image

    if len(images) != len(captions):
        raise ValueError(f"`images` and `captions` must pair up, got {len(images)} images and {len(captions)} "
                         "captions.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"`threshold` must be a cosine similarity in [-1, 1], got {threshold!r}.")
    bad = next((i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()), None)
    if bad is not None:
        raise ValueError(f"captions[{bad}] must be a non-empty string, got {captions[bad]!r}.")
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    image_processor = image_processor or getattr(processor_or_tokenizer, "image_processor", None)
    if image_processor is None:
        size = clip_model.config.vision_config.image_size
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    parameter = next(clip_model.parameters())
    max_length = clip_model.config.text_config.max_position_embeddings
    similarities = []
    for start in tqdm(range(0, len(captions), batch_size), desc="CLIP filter", disable=not progress):
        stop = min(start + batch_size, len(captions))
        batch = []
        for i in range(start, stop):
            try:
                batch.append(load_image(images[i]))
            except ValueError as error:
                raise ValueError(f"images[{i}]: {error}") from error
        pixels = image_processor(images=batch, return_tensors="pt")["pixel_values"]
        tokens = tokenizer(list(captions[start:stop]), padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")
        image = clip_image_embeddings(clip_model, pixels.to(parameter.device, parameter.dtype))
        text = clip_text_embeddings(clip_model, tokens["input_ids"].to(parameter.device),
                                    tokens["attention_mask"].to(parameter.device))
        similarities.append((image * text).sum(-1).float().cpu())
    similarities = torch.cat(similarities) if similarities else torch.zeros(0)
    return ClipFilterResult(similarities, similarities >= threshold)
