"""Shapes-world splits and export, the world tokenizer, and the evaluator's sanity cases."""

import random

import numpy as np
import PIL.Image
import pytest

from diffusers_uip2p.shapes import random_scene, render
from diffusers_uip2p.shapes.dataset import export_jsonl, load_jsonl, scene_of, split_edits, split_scenes, to_hf_dataset
from diffusers_uip2p.shapes.evaluator import aggregate, judge_caption, judge_edit, read_scene
from diffusers_uip2p.shapes.language import apply_instruction, parse_caption
from diffusers_uip2p.shapes.tokenizer import shapes_tokenizer, world_words


def test_splits_are_seeded_prefix_stable_and_disjoint():
    assert split_edits("test", 5) == split_edits("test", 12)[:5]
    assert split_edits("test", 4, start=3) == split_edits("test", 7)[3:]
    assert split_scenes("validation", 20) == split_scenes("validation", 20)
    train, test = split_edits("train", 300), split_edits("test", 300)
    assert not any(edit.held_out for edit in train), "training must not see held-out phrasings or pairs"
    assert 0.1 < np.mean([edit.held_out for edit in test]) < 0.9
    assert {e.category for e in test} == {"object_replacement", "action_editing", "scene_editing", "object_adding",
                                          "style_editing"}
    assert len({e.source.caption() for e in train} & {e.source.caption() for e in test}) < 15
    with pytest.raises(ValueError, match="`split` must be one of train, validation, test"):
        split_edits("dev", 1)


def test_jsonl_export_round_trips(tmp_path):
    edits = split_edits("validation", 6)
    path = export_jsonl(edits, tmp_path / "split")
    records = load_jsonl(path)
    assert len(records) == 6
    for edit, record in zip(edits, records, strict=True):
        assert set(record) == {"image", "input_caption", "edit_instruction", "edited_caption", "reverse_instruction",
                               "edited_image", "category", "edit_kind", "held_out"}
        assert record["image"].tobytes() == render(edit.source).tobytes()
        assert record["edited_image"].tobytes() == render(edit.target).tobytes()
        assert scene_of(record) == edit.source
        edited = apply_instruction(scene_of(record), record["edit_instruction"])
        assert edited.caption() == record["edited_caption"]
        assert apply_instruction(edited, record["reverse_instruction"]) == edit.source


def test_hf_dataset_export():
    edits = split_edits("train", 4)
    dataset = to_hf_dataset(edits)
    assert len(dataset) == 4 and dataset.features["image"].__class__.__name__ == "Image"
    row = dataset[2]
    assert isinstance(row["image"], PIL.Image.Image)
    assert np.array_equal(np.asarray(row["edited_image"].convert("RGB")), np.asarray(render(edits[2].target)))
    assert row["reverse_instruction"] == edits[2].reverse_instruction and row["held_out"] is False


def test_world_tokenizer_has_one_token_per_word():
    tokenizer = shapes_tokenizer()
    words = world_words(num_scenes=300)
    assert {"hexagon", "checkered", "upside", "recolour", "background"} <= set(words)
    assert all(len(tokenizer.tokenize(word)) == 1 for word in words)
    caption = split_scenes("test", 1)[0].caption()
    assert len(tokenizer(caption).input_ids) == len(caption.replace(",", " ,").split()) + 2
    assert tokenizer("a zebra").input_ids[-1] == tokenizer.eos_token_id  # any text still tokenizes
    assert tokenizer.model_max_length == 77


def test_reader_reads_exact_renders_exactly():
    rng = random.Random(11)
    for _ in range(150):
        scene = random_scene(rng)
        reading = read_scene(render(scene))
        assert (reading.objects, reading.background, reading.pattern, reading.style) == \
            (scene.objects, scene.background, scene.pattern, scene.style)
        assert reading.residual < 1e-6 and reading.readable


@pytest.fixture(scope="module")
def test_edits():
    return split_edits("test", 120)


def _rates(edits, output_for):
    judgements = [judge_edit(e.source, e.instruction, output_for(e), e.category) for e in edits]
    return aggregate(judgements)


def test_evaluator_accepts_true_edits_and_rejects_the_input(test_edits):
    true = _rates(test_edits, lambda e: render(e.target))
    assert all(row["success"] == 1.0 for row in true.values()), true
    assert true["all"]["psnr_to_true"] != true["all"]["psnr_to_true"] or true["all"]["l1_to_true"] == 0
    unedited = _rates(test_edits, lambda e: render(e.source))
    assert all(row["success"] == 0.0 and row["edit_applied"] == 0.0 for row in unedited.values()), unedited
    assert unedited["all"]["preserved"] == 1.0


@pytest.mark.parametrize("fill", [0, 128, 245])
def test_evaluator_is_not_fooled_by_blank_images(test_edits, fill):
    blank = np.full((64, 64, 3), fill, np.uint8)
    assert _rates(test_edits, lambda e: blank)["all"]["success"] == 0.0


def test_evaluator_is_not_fooled_by_noise(test_edits):
    rng = np.random.default_rng(0)
    rates = _rates(test_edits, lambda e: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert rates["all"]["success"] == 0.0 and rates["all"]["edit_applied"] == 0.0


def test_evaluator_rejects_the_wrong_edit_and_reports_preservation():
    source = parse_caption("a small red circle at the top left and a large blue square in the center "
                           "on a white background")
    wrong = apply_instruction(source, "make the red circle green")
    judgement = judge_edit(source, "make the red circle yellow", render(wrong), "object_replacement")
    assert not judgement.success and not judgement.edit_applied and judgement.preserved
    assert judgement.psnr_outside == float("inf") and judgement.l1_to_true > 0
    spoiled = apply_instruction(apply_instruction(source, "make the red circle yellow"), "make the blue square black")
    judgement = judge_edit(source, "make the red circle yellow", render(spoiled))
    assert judgement.edit_applied and not judgement.preserved and not judgement.success
    assert judgement.psnr_outside < 25


def test_caption_judgement():
    scene = split_scenes("test", 3)[2]
    assert judge_caption(scene.caption(), render(scene)).exact
    other = split_scenes("test", 4)[3]
    assert not judge_caption(scene, render(other)).objects_correct


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: read_scene(PIL.Image.new("RGB", (32, 32))), ValueError, "image must be a 64×64 RGB image"),
        (lambda: read_scene(PIL.Image.new("L", (64, 64))), ValueError, "image must be an RGB image"),
        (lambda: judge_edit("a small mauve circle at the top on a white background", "make the mauve circle red",
                            np.zeros((64, 64, 3), np.uint8)), ValueError, "Unknown colour 'mauve'; the Shapes world knows"),
        (lambda: judge_edit(3, "make it pixel art", np.zeros((64, 64, 3), np.uint8)), TypeError,
         "source must be a Scene or its caption"),
    ],
)
def test_evaluator_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
