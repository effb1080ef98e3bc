"""Judge Shapes-world images: read the scene back from the pixels, then compare it with the true scene.

`read_scene` is template matching against the world's own renderer. For each drawing style it picks the
background (colour and pattern) whose empty rendering best matches the image (ignoring the worst-fitting
quarter of the pixels, so objects do not sway it), then, in each of the 9 grid cells, the candidate that best matches the cell: no
object, or any object the world can draw there. The style with the smallest total error wins. The
reading's ``residual`` (mean absolute error between the image and the rendering of the reading) tells a
scene from noise.

`judge_edit` compares the reading of an edit's output with the *true* edited scene (the input caption
with the instruction applied): did every element the instruction changes come out as asked (``edit_applied``),
and did everything else stay (``preserved``)? ``success`` needs both, so a blank or noisy output, or the
unedited input, fails. Pixel figures: PSNR/L1 outside the changed region and the distance to the true
edited image. `judge_caption` is the text-to-image check: every named object present, right shape and
colour, in its place.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import PIL.Image

from .language import apply_instruction, parse_caption
from .scenes import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    PATTERNS,
    SHAPES,
    SIZES,
    STYLES,
    TURNABLE,
    Scene,
    ShapeObject,
    draw_layers,
    render,
)

CELL = 20  # grid cells span [2 + 20k, 22 + 20k) pixels
READABLE_RESIDUAL = 0.1  # mean absolute error in [0, 1]; exact renders read at ~0, uniform noise at ~0.35
_CELLS = [(row, column) for row in range(3) for column in range(3)]


def _pixels(image, argument: str = "image") -> np.ndarray:
    """A 64×64 RGB image as float32 in [0, 1]."""
    if isinstance(image, Scene):
        image = render(image)
    if isinstance(image, PIL.Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"{argument} must be an RGB image, got mode {image.mode!r}.")
        image = np.asarray(image)
    image = np.asarray(image)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"{argument} must be a {IMAGE_SIZE}×{IMAGE_SIZE} RGB image (the Shapes world's size), "
                         f"got an array of shape {image.shape}.")
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


def _cell(array: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = 2 + CELL * row, 2 + CELL * column
    return array[..., top: top + CELL, left: left + CELL, :]


def _candidates(background: str, row: int, column: int) -> list[ShapeObject | None]:
    objects = [ShapeObject(shape, colour, size, row, column, turned)
               for shape in SHAPES for colour in COLOURS if colour != background for size in SIZES
               for turned in ((False, True) if shape in TURNABLE else (False,))]
    return [None, *objects]


@functools.lru_cache(maxsize=64)
def _templates(background: str, pattern: str, style: str) -> tuple[np.ndarray, list]:
    """Every candidate's rendering, cell by cell: an array [9, K, 20, 20, 3] and the candidates per cell."""
    patches, options = [], []
    for row, column in _CELLS:
        cell_options = _candidates(background, row, column)
        drawn = [np.asarray(draw_layers(background, pattern, style, () if obj is None else (obj,)))
                 for obj in cell_options]
        patches.append(_cell(np.stack(drawn), row, column))
        options.append(cell_options)
    return np.stack(patches).astype(np.float32) / 255.0, options


@functools.lru_cache(maxsize=64)
def _empty(background: str, pattern: str, style: str) -> np.ndarray:
    return np.asarray(draw_layers(background, pattern, style, ())).astype(np.float32) / 255.0


def _background_error(pixels: np.ndarray, empty: np.ndarray) -> float:
    """Mean of the best-fitting 75 % of per-pixel errors: objects cover at most about 20 % of a scene, so
    they do not sway the choice, while a wrong pattern misfits half of the picture."""
    errors = np.sort(np.abs(pixels - empty).mean(axis=-1), axis=None)
    return float(errors[: int(0.75 * errors.size)].mean())


@dataclass(frozen=True)
class SceneReading:
    """What `read_scene` sees. ``objects`` may be empty (a blank image reads as no objects)."""

    objects: tuple[ShapeObject, ...]
    background: str
    pattern: str
    style: str
    residual: float  # mean |image − rendering of this reading|, in [0, 1]

    @property
    def readable(self) -> bool:
        return self.residual < READABLE_RESIDUAL

    def object_at(self, row: int, column: int) -> ShapeObject | None:
        return next((o for o in self.objects if (o.row, o.column) == (row, column)), None)


def read_scene(image) -> SceneReading:
    """Read a 64×64 RGB image (PIL, uint8 array or float array in [0, 1]) back into a scene."""
    pixels = _pixels(image)
    best = None
    for style in STYLES:
        background, pattern = min(((b, p) for b in BACKGROUNDS for p in PATTERNS),
                                  key=lambda bp: _background_error(pixels, _empty(*bp, style)))
        templates, options = _templates(background, pattern, style)
        observed = np.stack([_cell(pixels, row, column) for row, column in _CELLS])[:, None]
        errors = np.abs(templates - observed).mean(axis=(2, 3, 4))  # [9 cells, K candidates]
        choice = errors.argmin(axis=1)
        total = float(errors[np.arange(9), choice].sum())
        if best is None or total < best[0]:
            objects = tuple(options[cell][k] for cell, k in enumerate(choice) if options[cell][k] is not None)
            best = (total, objects, background, pattern, style)
    _, objects, background, pattern, style = best
    drawn = np.asarray(draw_layers(background, pattern, style, objects)).astype(np.float32) / 255.0
    return SceneReading(objects, background, pattern, style, float(np.abs(pixels - drawn).mean()))


def _as_scene(scene_or_caption, argument: str) -> Scene:
    if isinstance(scene_or_caption, Scene):
        return scene_or_caption
    if isinstance(scene_or_caption, str):
        return parse_caption(scene_or_caption)
    raise TypeError(f"{argument} must be a Scene or its caption, got {type(scene_or_caption).__name__}.")


def _elements(scene: Scene | SceneReading) -> dict:
    """A scene as comparable elements: its three global attributes and what each cell holds."""
    cells = {cell: next((o for o in scene.objects if (o.row, o.column) == cell), None) for cell in _CELLS}
    return {"background": scene.background, "pattern": scene.pattern, "style": scene.style, **cells}


def changed_region(source: Scene, target: Scene, margin: int = 1) -> np.ndarray:
    """Pixels where the true edit changes the picture, grown by ``margin`` pixels: a [64, 64] bool mask."""
    mask = np.any(np.asarray(render(source)) != np.asarray(render(target)), axis=-1)
    grown = mask.copy()
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            grown |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return grown


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@dataclass(frozen=True)
class EditJudgement:
    category: str | None
    success: bool  # edit_applied and preserved
    edit_applied: bool  # everything the instruction changes came out as the true edited scene has it
    preserved: bool  # everything else reads as before
    psnr_outside: float | None  # dB against the true edited image, outside the changed region (None: no such pixels)
    l1_outside: float | None
    psnr_to_true: float  # whole image against the true edited image
    l1_to_true: float
    reading: SceneReading


def judge_edit(source, instruction: str, output, category: str | None = None) -> EditJudgement:
    """Judge ``output`` as the result of ``instruction`` applied to ``source`` (a `Scene` or its caption)."""
    source = _as_scene(source, "source")
    target = apply_instruction(source, instruction)
    reading = read_scene(output)
    pixels, truth = _pixels(output, "output"), _pixels(target)
    wanted, before, seen = _elements(target), _elements(source), _elements(reading)
    changed = [key for key in wanted if wanted[key] != before[key]]
    kept = [key for key in wanted if wanted[key] == before[key]]
    applied = reading.readable and all(seen[key] == wanted[key] for key in changed)
    preserved = reading.readable and all(seen[key] == wanted[key] for key in kept)
    outside = ~changed_region(source, target)
    error = (pixels - truth) ** 2
    return EditJudgement(
        category=category, success=applied and preserved, edit_applied=applied, preserved=preserved,
        psnr_outside=_psnr(float(error[outside].mean())) if outside.any() else None,
        l1_outside=float(np.abs(pixels - truth)[outside].mean()) if outside.any() else None,
        psnr_to_true=_psnr(float(error.mean())), l1_to_true=float(np.abs(pixels - truth).mean()), reading=reading,
    )


@dataclass(frozen=True)
class CaptionJudgement:
    objects_correct: bool  # every object of the caption is in its cell with the right shape and colour
    exact: bool  # the whole reading equals the scene (sizes, poses, background, style, no extra objects)
    reading: SceneReading


def judge_caption(caption, image) -> CaptionJudgement:
    """The text-to-image check: does ``image`` show what ``caption`` (or a `Scene`) says?"""
    scene = _as_scene(caption, "caption")
    reading = read_scene(image)
    present = all((seen := reading.object_at(o.row, o.column)) is not None
                  and (seen.shape, seen.colour) == (o.shape, o.colour) for o in scene.objects)
    return CaptionJudgement(reading.readable and present, reading.readable and _elements(reading) == _elements(scene),
                            reading)


def aggregate(judgements: list[EditJudgement]) -> dict[str, dict[str, float]]:
    """Per-category means (and ``all``): success, edit_applied, preserved rates; mean PSNR/L1 figures
    (PSNR averaged over finite values only, as identical images have infinite PSNR)."""
    groups: dict[str, list[EditJudgement]] = {}
    for judgement in judgements:
        groups.setdefault(judgement.category or "uncategorised", []).append(judgement)
    groups["all"] = list(judgements)

    def mean(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return {name: {"count": len(group), "success": mean([j.success for j in group]),
                   "edit_applied": mean([j.edit_applied for j in group]),
                   "preserved": mean([j.preserved for j in group]),
                   "psnr_outside": mean([j.psnr_outside for j in group]),
                   "l1_outside": mean([j.l1_outside for j in group]),
                   "psnr_to_true": mean([j.psnr_to_true for j in group]),
                   "l1_to_true": mean([j.l1_to_true for j in group])}
            for name, group in groups.items()}
