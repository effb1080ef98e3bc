"""Pictures of attention maps: each token's map as a heatmap over the image, its text underneath."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

from ..checks import check_finite, check_number


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] → [H, W, 3] uint8, black → red → yellow → white."""
    rgb = np.stack([values * 3, values * 3 - 1, values * 3 - 2], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def draw_token_maps(image: PIL.Image.Image, token_maps: list[tuple[str, torch.Tensor]], cell_size: int = 128,
                    columns: int = 8) -> PIL.Image.Image:
    """A grid with one cell per (token, [h, w] map): the image under the map (each map scaled to its own
    maximum), the token's text below. ``token_maps`` is what `AttentionStore.token_maps` returns."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"`image` must be a PIL image, got {type(image).__name__}.")
    if not token_maps:
        raise ValueError("`token_maps` is empty; give at least one (token, map) pair.")
    check_number(cell_size, "cell_size", low=8, integer=True)
    check_number(columns, "columns", low=1, integer=True)
    for i, pair in enumerate(token_maps):
        token, attention = pair if isinstance(pair, (tuple, list)) and len(pair) == 2 else (None, None)
        if not isinstance(token, str) or not isinstance(attention, torch.Tensor) or attention.ndim != 2:
            seen = f"a map of shape {tuple(attention.shape)}" if isinstance(attention, torch.Tensor) else repr(pair)[:60]
            raise ValueError(f"`token_maps[{i}]` must be a (token, [h, w] tensor) pair, got {seen}.")
        check_finite(attention, f"token_maps[{i}]")
    font = PIL.ImageFont.load_default()
    label_height = 16
    columns = min(columns, len(token_maps))
    rows = -(-len(token_maps) // columns)
    grid = PIL.Image.new("RGB", (columns * cell_size, rows * (cell_size + label_height)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    background = np.asarray(image.convert("RGB").resize((cell_size, cell_size)), dtype=np.float32)
    for i, (token, attention) in enumerate(token_maps):
        values = attention.detach().float().cpu()
        values = (values / values.max().clamp_min(1e-12)).numpy()
        heat = PIL.Image.fromarray((values * 255).astype(np.uint8)).resize((cell_size, cell_size),
                                                                          PIL.Image.Resampling.BILINEAR)
        overlay = 0.4 * background + 0.6 * _heat_colours(np.asarray(heat, dtype=np.float32) / 255)
        x, y = (i % columns) * cell_size, (i // columns) * (cell_size + label_height)
        grid.paste(PIL.Image.fromarray(overlay.astype(np.uint8)), (x, y))
        text_width = draw.textlength(token, font=font)
        draw.text((x + (cell_size - text_width) / 2, y + cell_size + 2), token, fill="black", font=font)
    return grid
