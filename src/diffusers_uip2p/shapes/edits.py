"""Edits of Shapes-world scenes, in the five categories of the DSI paper (§4.3), each with its true result.

Every `Edit` carries a forward instruction, a reverse instruction, both captions, its category and the
*true edited scene*. The reverse instruction is itself an edit: applied to the edited scene it gives the
input scene back exactly. The last template of each kind is held out of the training split
(``HELD_OUT_TEMPLATE``), as are a few (colour, shape) pairs (``HELD_OUT_PAIRS``), so that tests measure
generalisation to unseen phrasings and attribute combinations.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from .scenes import BACKGROUNDS, COLOURS, PATTERNS, SHAPES, STYLES, TURNABLE, Scene, random_object

CATEGORIES = ("object_replacement", "action_editing", "scene_editing", "object_adding", "style_editing")
HELD_OUT_PAIRS = frozenset({("purple", "hexagon"), ("orange", "triangle")})
HELD_OUT_TEMPLATE = -1  # the last template of every kind

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
DIRECTION_PHRASE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
STYLE_TARGET = {"filled": "a flat drawing", "outlined": "an outline drawing", "pixelated": "pixel art"}

TEMPLATES = {
    "shape_swap": ["turn the {name} into a {shape}", "replace the {name} with a {colour} {shape}",
                   "make the {name} a {shape}", "change the {name} into a {shape}"],
    "colour_change": ["make the {name} {colour}", "paint the {name} {colour}",
                      "change the colour of the {name} to {colour}", "recolour the {name} {colour}"],
    "move": ["move the {name} {direction}", "shift the {name} {direction}", "slide the {name} {direction}"],
    "resize": ["make the {name} {size}", "change the {name} to {size}", "resize the {name} to {size}"],
    "rotate": ["{turn}", "please {turn}", "{turn}, nothing else"],
    "background": ["make the background {background}", "change the background to {background}",
                   "paint the background {background}", "switch to a {background} background"],
    "add": ["add a {object}", "put a {object}", "draw a {object}", "place a {object}"],
    "remove": ["remove the {name}", "delete the {name}", "take away the {name}", "erase the {name}"],
    "style": ["make it {style}", "turn it into {style}", "render it as {style}", "redraw it as {style}"],
}
KIND_CATEGORY = {
    "shape_swap": "object_replacement", "colour_change": "object_replacement", "move": "action_editing",
    "resize": "action_editing", "rotate": "action_editing", "background": "scene_editing",
    "add": "object_adding", "remove": "object_adding", "style": "style_editing",
}


@dataclass(frozen=True)
class Edit:
    kind: str
    source: Scene
    target: Scene
    instruction: str
    reverse_instruction: str
    template: int = 0  # index into TEMPLATES[kind] of the forward phrasing

    @property
    def category(self) -> str:
        return KIND_CATEGORY[self.kind]

    @property
    def input_caption(self) -> str:
        return self.source.caption()

    @property
    def edited_caption(self) -> str:
        return self.target.caption()

    def reversed(self) -> Edit:
        """The reverse edit: from the edited scene back to the input, exactly."""
        return Edit(REVERSE_KIND.get(self.kind, self.kind), self.target, self.source, self.reverse_instruction,
                    self.instruction, self.template)

    @property
    def held_out(self) -> bool:
        """Whether the training split could not contain this edit (held-out phrasing or colour/shape pair)."""
        pairs = {(o.colour, o.shape) for scene in (self.source, self.target) for o in scene.objects}
        return self.template == HELD_OUT_TEMPLATE % len(TEMPLATES[self.kind]) or bool(pairs & HELD_OUT_PAIRS)


def _phrase(kind: str, template: int, **words) -> str:
    text = TEMPLATES[kind][template].format(**words)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _candidates(kind: str, scene: Scene, rng: random.Random, exclude) -> list[tuple[Scene, dict, dict]]:
    """All (target scene, forward words, reverse words) this kind of edit can make of ``scene``."""
    out = []
    used_cells = {(o.row, o.column) for o in scene.objects}
    names = {o.name for o in scene.objects}
    for obj in scene.objects if kind not in ("background", "add", "style") else ():
        others = names - {obj.name}
        if kind == "shape_swap":
            for shape in SHAPES:
                new = replace(obj, shape=shape, turned=False)
                if shape != obj.shape and new.name not in others and (obj.colour, shape) not in exclude and not obj.turned:
                    out.append((scene.with_object(obj, new), {"name": obj.name, "shape": shape, "colour": obj.colour},
                                {"name": new.name, "shape": obj.shape, "colour": obj.colour}))
        elif kind == "colour_change":
            for colour in COLOURS:
                new = replace(obj, colour=colour)
                if (colour != obj.colour and colour != scene.background and new.name not in others
                        and (colour, obj.shape) not in exclude):
                    out.append((scene.with_object(obj, new), {"name": obj.name, "colour": colour},
                                {"name": new.name, "colour": obj.colour}))
        elif kind == "move":
            for direction, (dr, dc) in DIRECTIONS.items():
                row, column = obj.row + dr, obj.column + dc
                if 0 <= row < 3 and 0 <= column < 3 and (row, column) not in used_cells:
                    new = replace(obj, row=row, column=column)
                    out.append((scene.with_object(obj, new), {"name": obj.name, "direction": DIRECTION_PHRASE[direction]},
                                {"name": obj.name, "direction": DIRECTION_PHRASE[OPPOSITE[direction]]}))
        elif kind == "resize":
            size = "large" if obj.size == "small" else "small"
            out.append((scene.with_object(obj, replace(obj, size=size)), {"name": obj.name, "size": size},
                        {"name": obj.name, "size": obj.size}))
        elif kind == "rotate" and obj.shape in TURNABLE:
            new = replace(obj, turned=not obj.turned)
            turn = {"triangle": ("turn the {} upside down", "turn the {} upside down"),
                    "square": ("tilt the {}", "straighten the {}"), "hexagon": ("tilt the {}", "straighten the {}")}
            forward, backward = turn[obj.shape][::-1] if obj.turned else turn[obj.shape]
            out.append((scene.with_object(obj, new), {"turn": forward.format(obj.name)},
                        {"turn": backward.format(obj.name)}))
        elif kind == "remove" and len(scene.objects) > 1:
            out.append((scene.with_object(obj, None), {"name": obj.name}, {"object": obj.describe()}))
    if kind == "background":
        object_colours = {o.colour for o in scene.objects}
        for background in BACKGROUNDS:
            if background != scene.background and background not in object_colours:
                out.append((replace(scene, background=background), {"background": background},
                            {"background": scene.background}))
        for pattern in PATTERNS:
            if pattern != scene.pattern:
                out.append((replace(scene, pattern=pattern), {"background": pattern}, {"background": scene.pattern}))
    elif kind == "add" and len(scene.objects) < 3:
        new = random_object(rng, scene.background, used_cells, exclude)
        if new.name not in names:
            out.append((replace(scene, objects=scene.objects + (new,)), {"object": new.describe()},
                        {"name": new.name}))
    elif kind == "style":
        for style in STYLES:
            if style != scene.style:
                out.append((replace(scene, style=style), {"style": STYLE_TARGET[style]},
                            {"style": STYLE_TARGET[scene.style]}))
    return out


REVERSE_KIND = {"add": "remove", "remove": "add"}


def make_edit(scene: Scene, kind: str, rng: random.Random, template: int | None = None,
              exclude=frozenset()) -> Edit | None:
    """A random edit of ``kind`` on ``scene`` (None if this kind cannot apply). ``template`` picks the
    phrasing (the same index phrases the reverse); ``exclude`` bans (colour, shape) pairs from the result."""
    if kind not in TEMPLATES:
        raise ValueError(f"Unknown edit kind {kind!r}; known kinds: {', '.join(TEMPLATES)}.")
    options = _candidates(kind, scene, rng, exclude)
    if not options:
        return None
    target, forward, backward = rng.choice(options)
    reverse_kind = REVERSE_KIND.get(kind, kind)
    n = len(TEMPLATES[kind])
    index = rng.randrange(n) if template is None else template % n
    instruction = _phrase(kind, index, **forward)
    reverse = _phrase(reverse_kind, index % len(TEMPLATES[reverse_kind]), **backward)
    return Edit(kind, scene, target, instruction, reverse, index)


def random_edit(scene: Scene, rng: random.Random, held_out: bool = False) -> Edit:
    """A random applicable edit. Training (``held_out=False``) never uses the held-out template or pairs."""
    exclude = frozenset() if held_out else HELD_OUT_PAIRS
    kinds = list(TEMPLATES)
    rng.shuffle(kinds)
    for kind in kinds:
        n = len(TEMPLATES[kind])
        template = rng.choice([i for i in range(n) if held_out or i != HELD_OUT_TEMPLATE % n])
        edit = make_edit(scene, kind, rng, template, exclude)
        if edit is not None:
            return edit
    raise ValueError(f"No edit applies to {scene.caption()!r}.")
