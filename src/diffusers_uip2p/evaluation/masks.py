"""Edit masks with PIE-Bench's conventions (cure-lab/PnPInversion ``evaluation/evaluate.py``).

A mask is 1 on the edited region and 0 elsewhere. PIE-Bench does not *exclude* the edited region from
the background metrics: it multiplies both images by (1 − mask), so the edited pixels become black in
both and still count in every mean. We reproduce that, because it is what the published numbers mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def decode_pie_mask(rle: Sequence[int], height: int = 512, width: int = 512) -> torch.Tensor:
    """Decode a PIE-Bench ``mapping_file.json`` mask into a float [height, width] tensor (1 = edited).

    ``rle`` holds (start, length) pairs over the row-major flattened image; a run is cut at the image's
    end. Like PIE-Bench's ``mask_decode``, all four 1-pixel borders are then set to 1, to absorb
    annotation errors at the boundary, so a decoded mask is never empty.
    """
    if len(rle) % 2:
        raise ValueError(f"rle must hold (start, length) pairs, got an odd number of values ({len(rle)})")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}×{width}")
    size = height * width
    flat = torch.zeros(size)
    for start, length in zip(rle[0::2], rle[1::2], strict=True):
        if start < 0 or length < 0:
            raise ValueError(f"rle runs need a non-negative start and length, got ({start}, {length})")
        flat[start:min(start + length, size)] = 1
    mask = flat.reshape(height, width)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def as_mask(mask: torch.Tensor, images: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` ([B, 1, H, W], [B, H, W] or one [H, W] for the whole batch; bool or float) as a float
    [B, 1, H, W] tensor matching ``images`` [B, C, H, W]; a ValueError names both sizes when they differ."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None, None].expand(images.shape[0], 1, *mask.shape)
    elif mask.ndim == 3:
        mask = mask[:, None]
    elif mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must be [B, 1, H, W], [B, H, W] or [H, W], got shape {tuple(mask.shape)}")
    if mask.shape[0] != images.shape[0] or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"{name} has {mask.shape[0]} mask(s) of size {tuple(mask.shape[-2:])} but the images are "
                         f"{images.shape[0]} of size {tuple(images.shape[-2:])}; they must match")
    mask = mask.to(device=images.device, dtype=images.dtype)
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"{name} values must lie in [0, 1] (1 = edited), got [{mask.min():.3g}, {mask.max():.3g}]")
    return mask


def unedited_region(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` × (1 − mask): the edited region zeroed, not excluded (PIE-Bench's background metrics)."""
    return images * (1 - as_mask(mask, images))


def edited_region(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` × mask: everything outside the edit zeroed (PIE-Bench's "Edited" CLIP score)."""
    return images * as_mask(mask, images)


def empty_unedited_region(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per image, True where the mask covers the whole image: PIE-Bench reports "nan" for its background
    metrics then, and its averages skip those rows (cure-lab/PnPInversion#10)."""
    return (1 - as_mask(mask, images)).flatten(1).sum(1) == 0


def empty_edited_region(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per image, True where the mask is empty: the "Edited" CLIP score is "nan" then (PIE-Bench)."""
    return as_mask(mask, images).flatten(1).sum(1) == 0


def on_unedited_region(metric: Callable[..., torch.Tensor], pred: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """``metric`` [B] on pred × (1 − mask) and target × (1 − mask), as PIE-Bench's background metrics
    (``psnr_unedit_part`` …) do; NaN for an image whose mask covers it entirely."""
    values = metric(unedited_region(pred, mask), unedited_region(target, mask), **kwargs).double()
    return values.masked_fill(empty_unedited_region(mask, pred).to(values.device), float("nan"))
