"""The one place every pipeline's inputs are checked and normalised, before any model runs.

A user hands an editing library whatever image they have. Each documented form is converted exactly, and
anything else is refused with a message that names the argument, the form it saw and the forms accepted:

| form | accepted as |
|---|---|
| PIL image, any mode | RGB (alpha dropped with a warning; grey, palette and CMYK converted) |
| numpy HWC / NHWC, uint8 | 0–255 |
| numpy HWC / NHWC, float | [0, 1] when every value is in it, else 0–255 when every value is in that |
| torch CHW / NCHW, uint8 | 0–255 |
| torch CHW / NCHW, float | [0, 1] when every value is in it, [−1, 1] when some are negative (diffusers' rule) |

One or three channels (grey is repeated), or four for PIL only. A float range that fits none of these is
refused rather than guessed, and so is anything not finite. Sides that are not multiples of the VAE's
factor are resized down to one with a warning (`warnings.warn`, so it shows once per place even where
diffusers' logging is quiet), and images over ``max_pixels`` are refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import torch

from ..checks import check_number

DEFAULT_MAX_PIXELS = 4096 * 4096
ACCEPTED = ("PIL images (any mode), numpy HWC/NHWC arrays (uint8, or float in [0, 1] or [0, 255]), or torch "
            "CHW/NCHW tensors (uint8, or float in [0, 1] or [-1, 1])")


def _describe(image) -> str:
    if isinstance(image, PIL.Image.Image):
        return f"a PIL image of mode {image.mode!r}"
    return f"a {type(image).__module__.split('.')[0]} {image.dtype} array of shape {tuple(image.shape)}"


def _from_pil(image: PIL.Image.Image, where: str) -> torch.Tensor:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        warnings.warn(f"{where} has an alpha channel; it is dropped (the colours are kept as they are).",
                      stacklevel=4)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def _scale(values: torch.Tensor, where: str, description: str, signed_ok: bool) -> torch.Tensor:
    """Float pixels → [0, 1] by the range they are in (the module's table)."""
    if not torch.isfinite(values).all():
        raise ValueError(f"{where} ({description}) contains NaN or infinite values.")
    low, high = values.min().item(), values.max().item()
    if 0.0 <= low and high <= 1.0:
        return values
    if signed_ok and -1.0 <= low and high <= 1.0:
        return (values + 1) / 2
    if not signed_ok and 0.0 <= low and high <= 255.0:
        return values / 255.0
    accepted = "[0, 1] or [-1, 1]" if signed_ok else "[0, 1] or [0, 255]"
    raise ValueError(f"{where} ({description}) has values in [{low:.4g}, {high:.4g}], which is none of the ranges "
                     f"accepted for it ({accepted}); rescale it, e.g. to [0, 1].")


def _from_array(image, where: str) -> torch.Tensor:
    """numpy (HWC/NHWC) or torch (CHW/NCHW) → NCHW float in [0, 1]."""
    description = _describe(image)
    is_numpy = isinstance(image, np.ndarray)
    if image.ndim not in (3, 4):
        raise ValueError(f"{where} is {description}; expected {ACCEPTED}.")
    channel_axis = -1 if is_numpy else -3
    channels = image.shape[channel_axis]
    if channels not in (1, 3):
        other = image.shape[-3] if is_numpy else image.shape[-1]
        hint = (" It looks channels-first: numpy arrays are HWC (use `.transpose(1, 2, 0)`)." if is_numpy and other in (1, 3)
                else " It looks channels-last: tensors are CHW (use `.permute(2, 0, 1)`)." if not is_numpy and other in (1, 3)
                else "")
        raise ValueError(f"{where} is {description} with {channels} channels; expected 1 (grey) or 3 (RGB).{hint} "
                         f"Accepted: {ACCEPTED}.")
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if is_numpy else image.detach().cpu()
    if is_numpy:
        tensor = tensor.movedim(-1, -3)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.is_floating_point():
        tensor = _scale(tensor.float(), where, description, signed_ok=not is_numpy)
    else:
        raise ValueError(f"{where} is {description}; expected uint8 or float values. Accepted: {ACCEPTED}.")
    return tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor


def to_unit_pixels(image, name: str = "image", vae_scale_factor: int = 8,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """``image`` (one image, or a list of them, in any accepted form) → NCHW float32 in [0, 1], with sides
    that are multiples of ``vae_scale_factor``."""
    images = image if isinstance(image, list) else [image]
    if not images:
        raise ValueError(f"`{name}` is an empty list; give at least one image.")
    tensors = []
    for i, img in enumerate(images):
        where = f"`{name}`" + (f"[{i}]" if isinstance(image, list) else "")
        if isinstance(img, PIL.Image.Image):
            tensors.append(_from_pil(img, where))
        elif isinstance(img, (np.ndarray, torch.Tensor)):
            tensors.append(_from_array(img, where))
        else:
            raise TypeError(f"{where} is a {type(img).__name__}; expected {ACCEPTED}.")
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"The images in `{name}` have different sizes (height, width) {sorted(sizes)}; give images "
                         "of one size, or edit them one call at a time.")
    pixels = torch.cat(tensors)
    height, width = pixels.shape[-2:]
    if max_pixels is not None and height * width > max_pixels:
        raise ValueError(f"`{name}` is {width}×{height} = {height * width:,} pixels, over the limit of {max_pixels:,} "
                         f"(`max_pixels`); resize it first, or raise the limit.")
    factor = vae_scale_factor
    if height < factor or width < factor:
        raise ValueError(f"`{name}` is {width}×{height}; the VAE needs at least {factor}×{factor} pixels.")
    if height % factor or width % factor:
        new_h, new_w = height // factor * factor, width // factor * factor
        warnings.warn(f"`{name}` is {width}×{height}; the VAE needs sides that are multiples of {factor}, so it is "
                      f"resized to {new_w}×{new_h}.", stacklevel=3)
        pixels = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode="bicubic", align_corners=False,
                                                 antialias=True).clamp(0, 1)
    return pixels


def check_generator(generator, count: int, name: str = "generator") -> None:
    """None, one generator, or a list of exactly ``count`` generators (one per output image)."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, list) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"`{name}` must be a torch.Generator or a list of them, got {type(generator).__name__}.")
    if len(generator) != count:
        raise ValueError(f"`{name}` holds {len(generator)} generators for {count} images; give one per image "
                         "(batch × num_images_per_prompt), or a single generator.")


def check_guidance(value, name: str = "guidance_scale") -> None:
    """Finite and ≥ 0; below 1 it means no guidance (diffusers' convention), which is said, not silent."""
    check_number(value, name, low=0.0)
    if value < 1:
        warnings.warn(f"`{name}`={value} is below 1, which turns guidance off (it acts as 1).", stacklevel=3)


def check_steps(value, name: str = "num_inference_steps", minimum: int = 1) -> None:
    check_number(value, name, low=minimum, integer=True)
