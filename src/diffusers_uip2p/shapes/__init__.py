"""The Shapes world: synthetic scenes with exact captions, edits in the papers' five categories with their
true results. (Dataset export, the evaluator and the trained tiny models come next.)"""

from .edits import CATEGORIES, HELD_OUT_PAIRS, HELD_OUT_TEMPLATE, TEMPLATES, Edit, make_edit, random_edit
from .scenes import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
    ShapeObject,
    random_scene,
    render,
)

__all__ = [
    "BACKGROUNDS", "CATEGORIES", "COLOURS", "HELD_OUT_PAIRS", "HELD_OUT_TEMPLATE", "PATTERNS", "SHAPES", "SIZES",
    "STYLES", "TEMPLATES", "Edit", "Scene", "ShapeObject", "make_edit", "random_edit", "random_scene", "render",
]
