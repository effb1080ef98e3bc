"""Shapes-world scenes: 1–3 flat-coloured objects on a 3×3 grid, a background, a drawing style.

A `Scene` is a small frozen value: `render` draws it exactly (no randomness, no anti-aliasing), and
`caption` describes it exactly ("a small red circle at the top left and a large blue square in the center
on a striped white background"). Two scenes with the same caption render to the same pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
import PIL.Image
import PIL.ImageDraw

SHAPES = ("circle", "square", "triangle", "hexagon")
COLOURS = {  # object colours
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (240, 210, 40), "green": (40, 160, 70),
    "blue": (40, 80, 210), "purple": (140, 60, 180), "black": (25, 25, 25), "white": (245, 245, 245),
}
BACKGROUNDS = {  # background colours; an object never shares its scene's background colour
    "white": (245, 245, 245), "gray": (150, 150, 150), "yellow": (240, 210, 40), "blue": (40, 80, 210),
    "green": (40, 160, 70),
}
PATTERNS = ("plain", "striped", "checkered")
SIZES = {"small": 5, "large": 9}  # radius in pixels at 64×64
STYLES = ("filled", "outlined", "pixelated")
STYLE_PHRASES = {"filled": "", "outlined": "an outline drawing of ", "pixelated": "a pixel art image of "}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
TURNABLE = {"triangle": 180.0, "square": 45.0, "hexagon": 30.0}  # rotation of the "turned" pose
TURNED_WORD = {"triangle": "upside-down", "square": "tilted", "hexagon": "tilted"}
IMAGE_SIZE = 64


def check_word(kind: str, word: str, vocabulary) -> str:
    """A clear error listing the vocabulary, for captions and instructions built from user input."""
    if word not in vocabulary:
        raise ValueError(f"Unknown {kind} {word!r}; the Shapes world knows: {', '.join(sorted(vocabulary))}.")
    return word


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str  # "small" | "large"
    row: int  # 0..2, top to bottom
    column: int  # 0..2, left to right
    turned: bool = False

    def __post_init__(self):
        check_word("shape", self.shape, SHAPES)
        check_word("colour", self.colour, COLOURS)
        check_word("size", self.size, SIZES)
        if not (0 <= self.row < 3 and 0 <= self.column < 3):
            raise ValueError(f"row and column must be in 0..2, got ({self.row}, {self.column}).")
        if self.turned and self.shape not in TURNABLE:
            raise ValueError(f"A {self.shape} cannot be turned; turnable shapes: {', '.join(TURNABLE)}.")

    @property
    def name(self) -> str:
        """How instructions refer to it: colour and shape, unique within a scene."""
        return f"{self.colour} {self.shape}"

    @property
    def place(self) -> str:
        if (self.row, self.column) == (1, 1):
            return "in the center"
        if self.row == 1:
            return f"on the {COLUMNS[self.column]}"
        if self.column == 1:
            return f"at the {ROWS[self.row]}"
        return f"at the {ROWS[self.row]} {COLUMNS[self.column]}"

    def describe(self) -> str:
        turned = f"{TURNED_WORD[self.shape]} " if self.turned else ""
        return f"{self.size} {turned}{self.colour} {self.shape} {self.place}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: str = "white"
    pattern: str = "plain"
    style: str = "filled"

    def __post_init__(self):
        check_word("background colour", self.background, BACKGROUNDS)
        check_word("background pattern", self.pattern, PATTERNS)
        check_word("style", self.style, STYLES)
        if not 1 <= len(self.objects) <= 3:
            raise ValueError(f"A scene holds 1 to 3 objects, got {len(self.objects)}.")
        if len({(o.row, o.column) for o in self.objects}) != len(self.objects):
            raise ValueError("Two objects share a grid cell.")
        if len({o.name for o in self.objects}) != len(self.objects):
            raise ValueError("Two objects share colour and shape; instructions could not tell them apart.")
        if any(o.colour == self.background for o in self.objects):
            raise ValueError(f"An object has the background's colour ({self.background}).")
        # keep a canonical order (reading order) so that equal scenes compare equal
        ordered = tuple(sorted(self.objects, key=lambda o: (o.row, o.column)))
        object.__setattr__(self, "objects", ordered)

    def find(self, name: str) -> ShapeObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise ValueError(f"No {name} in this scene; it has: {', '.join(o.name for o in self.objects)}.")

    def with_object(self, old: ShapeObject, new: ShapeObject | None) -> Scene:
        """The scene with ``old`` replaced by ``new`` (or removed when ``new`` is None)."""
        objects = tuple(new if o == old else o for o in self.objects if o != old or new is not None)
        return replace(self, objects=objects)

    def caption(self) -> str:
        things = [f"{'an' if o.describe()[0] in 'aeiou' else 'a'} {o.describe()}" for o in self.objects]
        listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
        pattern = "" if self.pattern == "plain" else f"{self.pattern} "
        return f"{STYLE_PHRASES[self.style]}{listed} on a {pattern}{self.background} background"


def _polygon(obj: ShapeObject, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    sides = {"square": 4, "triangle": 3, "hexagon": 6}[obj.shape]
    start = {"square": 45.0, "triangle": 90.0, "hexagon": 0.0}[obj.shape]
    if obj.turned:
        start += TURNABLE[obj.shape]
    angles = [math.radians(start + 360.0 * k / sides) for k in range(sides)]
    return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in angles]


def _shade(rgb, factor: float):
    return tuple(int(round(c * factor)) for c in rgb)


def render(scene: Scene, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    """Draw a scene exactly: deterministic, aliased, flat colours."""
    return draw_layers(scene.background, scene.pattern, scene.style, scene.objects, size)


def draw_layers(background: str, pattern: str, style: str, objects, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    """`render` without the checks of `Scene`: any number of objects, including none (the evaluator
    draws candidate objects one at a time)."""
    scale = size / IMAGE_SIZE
    bg = BACKGROUNDS[background]
    image = PIL.Image.new("RGB", (size, size), bg)
    draw = PIL.ImageDraw.Draw(image)
    band = max(1, round(4 * scale))
    if pattern == "striped":
        for y in range(0, size, 2 * band):
            draw.rectangle((0, y, size - 1, y + band - 1), fill=_shade(bg, 0.8))
    elif pattern == "checkered":
        cell = 2 * band
        for y in range(0, size, cell):
            for x in range(0, size, cell):
                if (x // cell + y // cell) % 2:
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=_shade(bg, 0.8))
    outline_only = style == "outlined"
    for obj in objects:
        cx, cy = (12 + 20 * obj.column) * scale, (12 + 20 * obj.row) * scale
        r, colour = SIZES[obj.size] * scale, COLOURS[obj.colour]
        fill, width = (None, max(1, round(2 * scale))) if outline_only else (colour, 0)
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=colour if outline_only else None,
                         width=width)
        else:
            draw.polygon(_polygon(obj, cx, cy, r), fill=fill, outline=colour if outline_only else None,
                         width=width)
    if style == "pixelated":  # 4×4 blocks with a faint grid, so the style always shows
        block = max(1, round(4 * scale))
        small = image.resize((size // block, size // block), PIL.Image.BOX)
        pixels = np.asarray(small.resize((size, size), PIL.Image.NEAREST)).astype(np.float64)
        on_grid = np.arange(size) % block == 0
        lines = on_grid[:, None] | on_grid[None, :]
        pixels[lines] = np.round(pixels[lines] * 0.85)  # half to even, as Python's round
        image = PIL.Image.fromarray(pixels.astype(np.uint8))
    return image


def random_object(rng: random.Random, scene_background: str, taken: set, exclude=frozenset()) -> ShapeObject:
    """A random object in a cell not in ``taken``, not of the background's colour, not in ``exclude``
    ((colour, shape) pairs)."""
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        row, column = rng.randrange(3), rng.randrange(3)
        if colour == scene_background or (row, column) in taken or (colour, shape) in exclude:
            continue
        turned = shape in TURNABLE and rng.random() < 0.25
        return ShapeObject(shape, colour, rng.choice(sorted(SIZES)), row, column, turned)


def random_scene(rng: random.Random, exclude=frozenset()) -> Scene:
    """A random scene; ``exclude`` holds (colour, shape) pairs that must not appear (held-out combinations)."""
    background = rng.choice(sorted(BACKGROUNDS))
    objects, names, cells = [], set(), set()
    for _ in range(rng.randint(1, 3)):
        obj = random_object(rng, background, cells, exclude)
        if obj.name in names:
            continue
        objects.append(obj)
        names.add(obj.name)
        cells.add((obj.row, obj.column))
    pattern = rng.choices(PATTERNS, weights=(0.6, 0.2, 0.2))[0]
    style = rng.choices(STYLES, weights=(0.7, 0.15, 0.15))[0]
    return Scene(tuple(objects), background, pattern, style)
