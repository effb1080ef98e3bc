"""The Shapes world: deterministic scenes, exact captions, edits with true results and exact reverses."""

import random

import numpy as np
import pytest

from diffusers_uip2p.shapes import (
    HELD_OUT_PAIRS,
    HELD_OUT_TEMPLATE,
    TEMPLATES,
    Scene,
    ShapeObject,
    make_edit,
    random_edit,
    random_scene,
    render,
)
from diffusers_uip2p.shapes.language import _template_regex, apply_instruction, parse_caption

OBJECT_KINDS = ("shape_swap", "colour_change", "move", "resize", "rotate", "add", "remove")


def scenes(n, seed=0, **kwargs):
    rng = random.Random(seed)
    return [random_scene(rng, **kwargs) for _ in range(n)]


def test_generator_is_deterministic():
    assert scenes(50, seed=7) == scenes(50, seed=7)
    assert scenes(50, seed=7) != scenes(50, seed=8)
    first, again = scenes(1, seed=3)[0], scenes(1, seed=3)[0]
    assert render(first).tobytes() == render(again).tobytes()
    assert render(first).size == (64, 64) and render(first).mode == "RGB"


def test_captions_are_exact():
    for scene in scenes(500):
        assert parse_caption(scene.caption()) == scene
    described = [s.caption() for s in scenes(500)]
    renders = {s.caption(): render(s).tobytes() for s in scenes(500)}
    assert len(set(renders.values())) == len(set(described)), "different captions draw different pictures"


def _cells_box(objects, margin):
    mask = np.zeros((64, 64), bool)
    for obj in objects:
        cx, cy = 12 + 20 * obj.column, 12 + 20 * obj.row
        mask[max(0, cy - 11 - margin): cy + 12 + margin, max(0, cx - 11 - margin): cx + 12 + margin] = True
    return mask


@pytest.mark.parametrize("kind", list(TEMPLATES))
def test_every_edit_kind_has_a_true_result_and_an_exact_reverse(kind):
    rng, made = random.Random(kind), 0
    for scene in scenes(150, seed=1):
        edit = make_edit(scene, kind, rng)
        if edit is None:
            continue
        made += 1
        before, after = np.asarray(render(edit.source)), np.asarray(render(edit.target))
        changed = (before != after).any(-1)
        assert changed.any(), f"{edit.instruction!r} changed nothing"
        if kind in OBJECT_KINDS:  # only the edited object's old and new cells may change
            moved = set(edit.source.objects) ^ set(edit.target.objects)
            margin = 4 if scene.style == "pixelated" else 0
            assert not (changed & ~_cells_box(moved, margin)).any(), edit.instruction
        assert apply_instruction(edit.source, edit.instruction) == edit.target
        assert apply_instruction(edit.target, edit.reverse_instruction) == edit.source
        assert edit.reversed().target == edit.source
        assert parse_caption(edit.edited_caption) == edit.target
    assert made >= 20


def test_training_edits_avoid_held_out_phrasings_and_pairs():
    held_out = [_template_regex(templates[HELD_OUT_TEMPLATE]) for templates in TEMPLATES.values()]
    rng = random.Random(0)
    for scene in scenes(400, seed=2, exclude=HELD_OUT_PAIRS):
        assert not {(o.colour, o.shape) for o in scene.objects} & HELD_OUT_PAIRS
        edit = random_edit(scene, rng, held_out=False)
        assert not any(r.match(edit.instruction) for r in held_out), edit.instruction
        assert not {(o.colour, o.shape) for o in edit.target.objects} & HELD_OUT_PAIRS
    test_edits = [random_edit(s, rng, held_out=True) for s in scenes(400, seed=3)]
    assert any(any(r.match(e.instruction) for r in held_out) for e in test_edits)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: apply_instruction(s, "make the mauve circle blue"), "Unknown colour 'mauve'; the Shapes world knows: black"),
        (lambda s: apply_instruction(s, "turn the red star into a circle"), "Unknown shape 'star'; the Shapes world knows: circle"),
        (lambda s: apply_instruction(s, "make the red circle teal"), "Unknown colour 'teal'"),
        (lambda s: apply_instruction(s, "dance the red circle"), "Cannot follow"),
        (lambda s: parse_caption("a small teal circle at the top on a white background"), "Unknown colour 'teal'"),
        (lambda s: parse_caption("a small red blob at the top on a white background"), "Unknown shape 'blob'"),
        (lambda s: ShapeObject("circle", "red", "huge", 0, 0), "Unknown size 'huge'"),
        (lambda s: ShapeObject("circle", "red", "small", 0, 0, turned=True), "cannot be turned"),
        (lambda s: Scene((ShapeObject("circle", "white", "small", 0, 0),), background="white"), "background's colour"),
    ],
)
def test_bad_words_get_clear_errors(call, match):
    scene = Scene((ShapeObject("circle", "red", "small", 0, 0), ShapeObject("square", "blue", "large", 1, 1)))
    with pytest.raises(ValueError, match=match):
        call(scene)


def test_vocabulary_is_exactly_the_words_the_world_writes():
    from diffusers_uip2p.shapes.language import check_vocabulary, vocabulary
    from diffusers_uip2p.shapes.tokenizer import world_words

    assert vocabulary() == {word for word in world_words(num_scenes=400) if word.isalpha()}
    assert check_vocabulary("Tilt the red square, nothing else", "instruction") == "Tilt the red square, nothing else"
    with pytest.raises(ValueError, match="instruction has words the Shapes world does not know: cyan, rhombus"):
        check_vocabulary("turn the cyan circle into a rhombus", "instruction")


SCENE_TEXT = ("a large red triangle at the top left, a small blue circle in the center and a large red square at the "
              "bottom right on a white background")


@pytest.mark.parametrize("typed, canonical", [
    ("Make the blue circle RED!", "make the blue circle red"),
    ("make the circle red.", "make the blue circle red"),                # shape alone, one circle
    ("make the blue one green", "make the blue circle green"),           # colour alone, one blue object
    ("move the circle left", "move the blue circle to the left"),        # direction synonyms
    ("Move the blue circle upwards", "move the blue circle up"),
    ("turn the triangle upside down", "turn the red triangle upside down"),
    ("Tilt the triangle!", "tilt the red triangle"),
    ("remove the square", "remove the red square"),
    ("replace the square with a red hexagon", "replace the red square with a red hexagon"),
])
def test_the_parser_forgives_case_punctuation_and_short_names(typed, canonical):
    from diffusers_uip2p.shapes.language import apply_instruction, canonical_instruction, parse_caption

    scene = parse_caption(SCENE_TEXT)
    assert canonical_instruction(scene, typed) == canonical
    assert apply_instruction(scene, typed) == apply_instruction(scene, canonical)


def test_an_ambiguous_name_lists_the_candidates_and_the_help_shows_examples():
    from diffusers_uip2p.shapes.language import apply_instruction, parse_caption

    scene = parse_caption(SCENE_TEXT)
    with pytest.raises(ValueError, match="'the red one' names 2 objects in this scene; name one by colour and shape: "
                                         "the red triangle, the red square"):
        apply_instruction(scene, "make the red one blue")
    with pytest.raises(ValueError, match="names no objects in this scene; .*the red triangle, the blue circle"):
        apply_instruction(scene, "make the hexagon blue")
    with pytest.raises(ValueError, match="phrasings it can follow, e.g.: turn the red triangle into a circle; "
                                         "make the red triangle black; move the red triangle to the left"):
        apply_instruction(scene, "frobnicate the circle")


def test_canonical_phrasing_of_every_generated_edit_is_itself():
    from diffusers_uip2p.shapes.dataset import split_edits
    from diffusers_uip2p.shapes.language import apply_instruction, canonical_instruction

    for edit in split_edits("test", 300):
        assert canonical_instruction(edit.source, edit.instruction) == edit.instruction
        assert apply_instruction(edit.source, edit.instruction) == edit.target
