"""CLIP and DINO metrics of the editing benchmarks, each taking its model (and processor) as an argument.

Images are float [B, 3, H, W] in [0, 1]. Before a processor sees them they are quantised to 8 bits
(round(x·255)), as every benchmark script reads PNG files; the processor then does its own resizing,
cropping and normalisation, so the processor is part of the metric's definition and is recorded by
``Metrics.describe``. Documented defaults for users (never downloaded by the tests):
``openai/clip-vit-large-patch14`` (PIE-Bench's torchmetrics ``CLIPScore``) and ``facebook/dino-vitb8``
(DINO ViT-B/8, PIE-Bench's structure-distance backbone).

Conventions and their sources:

- CLIP-I / Emu Edit's CLIP_im: cosine of the two images' CLIP embeddings (MagicBrush ``eval_clip_i``).
- CLIP-T / Emu Edit's CLIP_out: cosine of the edited image's and a caption's embeddings.
- Emu Edit's CLIP_dir: cosine between the change of the image embeddings and the change of the caption
  embeddings, each embedding unit-normalised first (as StyleGAN-NADA's directional loss does).
- PIE-Bench's CLIP score: 100·max(cos, 0) (torchmetrics ``CLIPScore``), on the whole edited image or on
  edited × mask, against the prompt with "[" and "]" removed (``evaluation/evaluate.py``).
- DINO similarity: cosine of the CLS tokens of the last layer (after the final layer norm).
- PIE-Bench's structure distance: MSE between the cosine self-similarity matrices of the last layer's
  keys (CLS token included, heads concatenated), see :func:`structure_distance`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .clip_features import clip_image_embeddings, clip_text_embeddings
from .masks import edited_region, empty_edited_region

CLIP_ID = "openai/clip-vit-large-patch14"
DINO_ID = "facebook/dino-vitb8"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks the edited words with brackets ("a [red] car"); its evaluation removes them."""
    return prompt.replace("[", "").replace("]", "")


def as_texts(texts: str | Sequence[str], batch_size: int, name: str) -> list[str]:
    """One text per image: a single string is used for every image; a list must have ``batch_size`` items."""
    if isinstance(texts, str):
        return [texts] * batch_size
    texts = list(texts)
    if len(texts) != batch_size or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name} must be a string or a list of {batch_size} strings (one per image), got {texts!r}")
    return texts


def to_uint8_arrays(images: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, H, W] floats in [0, 1] to B uint8 H×W×3 arrays, rounding as diffusers' ``numpy_to_pil`` does."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).cpu().numpy())


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@torch.no_grad()
def clip_image_features(images: torch.Tensor, clip_model, processor) -> torch.Tensor:
    """Unit-norm CLIP image embeddings [B, D] through ``processor`` (a ``CLIPProcessor``)."""
    device, dtype = _device_dtype(clip_model)
    pixels = processor(images=to_uint8_arrays(images), return_tensors="pt")["pixel_values"]
    return clip_image_embeddings(clip_model, pixels.to(device, dtype)).float()


@torch.no_grad()
def clip_text_features(texts: Sequence[str], clip_model, processor) -> torch.Tensor:
    """Unit-norm CLIP text embeddings [B, D]; texts longer than the tokenizer's limit are truncated."""
    device, _ = _device_dtype(clip_model)
    tokens = processor(text=list(texts), padding=True, truncation=True, return_tensors="pt")
    return clip_text_embeddings(clip_model, tokens["input_ids"].to(device),
                                tokens["attention_mask"].to(device)).float()


def clip_i(a: torch.Tensor, b: torch.Tensor, clip_model, processor) -> torch.Tensor:
    """Per-image cosine [B] of CLIP image embeddings: MagicBrush's CLIP-I (edited vs ground truth) and
    Emu Edit's CLIP_im (edited vs input image)."""
    return (clip_image_features(a, clip_model, processor) * clip_image_features(b, clip_model, processor)).sum(-1)


def clip_t(images: torch.Tensor, texts: str | Sequence[str], clip_model, processor) -> torch.Tensor:
    """Per-image cosine [B] of image and text CLIP embeddings: MagicBrush's CLIP-T and Emu Edit's CLIP_out
    (edited image vs output caption)."""
    image_features = clip_image_features(images, clip_model, processor)
    text_features = clip_text_features(as_texts(texts, images.shape[0], "texts"), clip_model, processor)
    return (image_features * text_features).sum(-1)


def clip_dir(source: torch.Tensor, edited: torch.Tensor, source_caption: str | Sequence[str],
             target_caption: str | Sequence[str], clip_model, processor) -> torch.Tensor:
    """Emu Edit's CLIP_dir [B]: cos(Ê_I(edited) − Ê_I(source), Ê_T(target) − Ê_T(source)) with Ê unit-norm
    embeddings; 0 where either change is zero (an unchanged image agrees with no direction)."""
    batch = source.shape[0]
    image_change = (clip_image_features(edited, clip_model, processor)
                    - clip_image_features(source, clip_model, processor))
    text_change = (clip_text_features(as_texts(target_caption, batch, "target_caption"), clip_model, processor)
                   - clip_text_features(as_texts(source_caption, batch, "source_caption"), clip_model, processor))
    return direction_similarity(image_change, text_change)


def direction_similarity(image_change: torch.Tensor, text_change: torch.Tensor) -> torch.Tensor:
    """Cosine of two embedding changes, 0 where either is zero."""
    return F.cosine_similarity(image_change, text_change, dim=-1, eps=1e-8)


def clip_score(images: torch.Tensor, prompts: str | Sequence[str], clip_model, processor) -> torch.Tensor:
    """PIE-Bench's CLIP score [B] = 100·max(cos, 0) against the prompts with brackets stripped."""
    prompts = [strip_brackets(p) for p in as_texts(prompts, images.shape[0], "prompts")]
    return 100 * clip_t(images, prompts, clip_model, processor).clamp(min=0)


def clip_edited_score(images: torch.Tensor, mask: torch.Tensor, prompts: str | Sequence[str], clip_model,
                      processor) -> torch.Tensor:
    """PIE-Bench's "Edited" CLIP score [B]: :func:`clip_score` of images × mask; NaN for an empty mask."""
    scores = clip_score(edited_region(images, mask), prompts, clip_model, processor)
    return scores.masked_fill(empty_edited_region(mask, images).to(scores.device), float("nan"))


@torch.no_grad()
def dino_features(images: torch.Tensor, dino_model, processor) -> torch.Tensor:
    """Unit-norm CLS embeddings [B, D] of a transformers ViT (``ViTModel``, ``Dinov2Model``): the first
    token of ``last_hidden_state``, after the final layer norm (not ViTModel's tanh pooler)."""
    device, dtype = _device_dtype(dino_model)
    pixels = processor(images=to_uint8_arrays(images), return_tensors="pt")["pixel_values"]
    return F.normalize(dino_model(pixel_values=pixels.to(device, dtype)).last_hidden_state[:, 0].float(), dim=-1)


def dino_similarity(a: torch.Tensor, b: torch.Tensor, dino_model, processor) -> torch.Tensor:
    """Per-image cosine [B] of DINO CLS embeddings (MagicBrush's and Emu Edit's DINO score)."""
    return (dino_features(a, dino_model, processor) * dino_features(b, dino_model, processor)).sum(-1)


def resized_size(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """torchvision's ``Resize(size, max_size)`` output size: the shorter side becomes ``size`` (the longer
    one is scaled and truncated), unless that makes the longer side exceed ``max_size``."""
    short, long = sorted((height, width))
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if height <= width else (new_long, new_short)


def structure_inputs(images: torch.Tensor, size: int = 224, max_size: int | None = 480,
                     pie_bench_quirk: bool = True, antialias: bool = False) -> torch.Tensor:
    """PIE-Bench's structure-distance preprocessing: 8-bit values, ``Resize(224, max_size=480)`` (bilinear),
    then ImageNet normalisation.

    With ``pie_bench_quirk`` (the default, to reproduce the published numbers) the normalisation is applied
    to the raw 0–255 values with no /255, exactly as PnPInversion's ``LossG.global_transform`` does; without
    it, to values in [0, 1]. ``antialias=False`` is what torchvision's tensor ``Resize`` did before 0.17
    (2024), i.e. when PIE-Bench was published; later torchvision versions antialias by default.
    """
    pixels = (images.detach().float().clamp(0, 1) * 255).round()
    if not pie_bench_quirk:
        pixels = pixels / 255
    height, width = resized_size(*images.shape[-2:], size, max_size)
    if (height, width) != tuple(images.shape[-2:]):
        pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False,
                               antialias=antialias)
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def last_key_projection(vit_model: nn.Module) -> nn.Linear:
    """The key projection of a transformers ViT's last attention layer (``k_proj``, or ``key`` in older
    transformers): its output is the keys with all heads concatenated, head-major, CLS token first."""
    keys = [m for name, m in vit_model.named_modules() if name.rsplit(".", 1)[-1] in ("k_proj", "key")
            and isinstance(m, nn.Linear)]
    if not keys:
        raise ValueError(f"structure_model ({type(vit_model).__name__}) has no attention key projection "
                         "(a Linear named 'k_proj' or 'key'); pass a transformers ViTModel or Dinov2Model")
    return keys[-1]


@torch.no_grad()
def key_self_similarity(pixel_values: torch.Tensor, vit_model: nn.Module) -> torch.Tensor:
    """Cosine self-similarity [B, N, N] of the last layer's keys (N tokens, CLS included), with PIE-Bench's
    clamp of the norm product at 1e-8."""
    device, dtype = _device_dtype(vit_model)
    captured = []
    handle = last_key_projection(vit_model).register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        kwargs = {}
        if "interpolate_pos_encoding" in inspect.signature(vit_model.forward).parameters:
            kwargs["interpolate_pos_encoding"] = True
        vit_model(pixel_values=pixel_values.to(device, dtype), **kwargs)
    finally:
        handle.remove()
    keys = captured[-1].float()
    norms = keys.norm(dim=-1, keepdim=True)
    return keys @ keys.transpose(1, 2) / (norms @ norms.transpose(1, 2)).clamp(min=1e-8)


def structure_distance(source: torch.Tensor, edited: torch.Tensor, vit_model: nn.Module, size: int = 224,
                       max_size: int | None = 480, pie_bench_quirk: bool = True,
                       antialias: bool = False) -> torch.Tensor:
    """PIE-Bench's structure distance [B]: MSE between the key self-similarity matrices of source and edited
    (PnPInversion ``LossG.calculate_global_ssim_loss`` with DINO ViT-B/8, layer 11 of 12 = the last), on the
    whole image. Preprocessing as :func:`structure_inputs`; 0 for identical images."""
    options = dict(size=size, max_size=max_size, pie_bench_quirk=pie_bench_quirk, antialias=antialias)
    a = key_self_similarity(structure_inputs(source, **options), vit_model)
    b = key_self_similarity(structure_inputs(edited, **options), vit_model)
    return ((a - b) ** 2).mean((1, 2))
