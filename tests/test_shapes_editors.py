"""The shipped Shapes instruction editors load offline, and the command line's ``edit`` and ``auto-edit``
succeed on a small fixed set of test edits at the rates `benchmarks/shapes_tables.py` reports."""

import json
import math
from pathlib import Path

import PIL.Image
import pytest
import torch

from diffusers_uip2p import UIP2PPipeline
from diffusers_uip2p.cli import main
from diffusers_uip2p.evaluation import ShapesBenchmark
from diffusers_uip2p.evaluation.runners import finished_rows
from diffusers_uip2p.pipelines.editing import DEFAULT_TARGET_RULE
from diffusers_uip2p.shapes import render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.evaluator import judge_edit
from diffusers_uip2p.shapes.pretrained import EDITOR_NAMES, load_shapes_editor, shapes_model_path

RUNS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "shapes-tables"


@pytest.mark.parametrize("name", EDITOR_NAMES)
def test_shipped_editors_load_offline(name):
    pipe = load_shapes_editor(name)
    assert isinstance(pipe, UIP2PPipeline) and pipe.unet.config.in_channels == 8
    assert all(p.suffix != ".bin" for p in shapes_model_path(name).rglob("*")), "safetensors only"
    card = (shapes_model_path(name) / "README.md").read_text()
    assert "training time" in card and "--seed 0" in card


def test_editors_share_the_pipelines_frozen_components(tmp_path):
    """The editors carry no copy of the VAE, text encoder and tokenizer they were trained with, frozen: they load
    the pipeline's, the same weights bit for bit."""
    import json
    import shutil

    from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline, shared_components

    pipe, editor = load_shapes_pipeline(), load_shapes_editor("ip2p")
    for name in ("vae", "text_encoder"):
        assert not (shapes_model_path("ip2p") / name).exists()
        ours, theirs = getattr(editor, name).state_dict(), getattr(pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert editor.tokenizer("a red circle").input_ids == pipe.tokenizer("a red circle").input_ids
    folder = tmp_path / "editor"
    shutil.copytree(shapes_model_path("ip2p"), folder)
    (folder / "shared_components.json").write_text(json.dumps({"vae": str(shapes_model_path("pipeline")),
                                                               "image_encoder2": "../x"}))
    with pytest.raises(ValueError, match="shares 'image_encoder2', which .*model_index.json does not list"):
        shared_components(folder)


def _table_rows(run: str) -> dict[str, dict]:
    return finished_rows(RUNS / "uip2p" / run)


def _within_noise(successes: int, count: int, rate: float) -> bool:
    """|successes − count·rate| within two binomial standard deviations, plus one for rounding."""
    return abs(successes - count * rate) <= 2 * math.sqrt(count * rate * (1 - rate)) + 1


def _edit_files(tmp_path, edits):
    paths = []
    for index, edit in enumerate(edits):
        paths.append(tmp_path / f"input-{index}.png")
        render(edit.source).save(paths[-1])
    return paths


@pytest.mark.parametrize("model, run", [(None, "uip2p-erc-only"), ("shapes:ip2p", "instructpix2pix-supervised")])
def test_cli_edit_succeeds_at_the_tables_rate(model, run, tmp_path):
    """The same edits, seed and settings as the UIP2P table: each verdict should repeat (the outputs are
    the same computation; a different thread count may flip a borderline one)."""
    count = 12
    benchmark = ShapesBenchmark("test", count)
    edits, keys = split_edits("test", count), benchmark.keys  # the edits the benchmark reads, in order
    table = _table_rows(run)
    verdicts, distances = [], []
    for index, (edit, path) in enumerate(zip(edits, _edit_files(tmp_path, edits), strict=True)):
        output = tmp_path / f"out-{index}"
        argv = ["edit", str(path), edit.instruction, "--steps", "50", "--seed", "0", "--output", str(output)]
        assert main(argv + (["--model", model] if model else [])) == 0
        judged = judge_edit(edit.source, edit.instruction, PIL.Image.open(output / "edit.png"))
        verdicts.append(judged.success)
        distances.append(judged.psnr_to_true)
    expected = [table[key]["success"] for key in keys]
    assert sum(a != b for a, b in zip(verdicts, expected, strict=True)) <= 1, (verdicts, expected)
    # the same images as the table's, up to kernel rounding: PSNR to the true edit agrees per edit
    close = [abs(d - table[key]["psnr_to_true"]) < 0.5 for d, key in zip(distances, keys, strict=True)]
    assert sum(close) >= count - 1, (distances, [table[key]["psnr_to_true"] for key in keys])
    overall = json.loads((RUNS / "uip2p" / run / "results.json").read_text())["summary"]["all"]["success"]
    assert _within_noise(sum(verdicts), count, overall), (sum(verdicts), overall)


def test_cli_auto_edit_succeeds_at_the_tables_rate(tmp_path):
    """``auto-edit`` (DSI with the default rule + the shipped routing table) against the editing benchmark's
    ``auto`` on the same test edits; the shipped table is the one that benchmark chose on validation."""
    editing = json.loads((RUNS.parent / "shapes-editing.json").read_text())
    shipped = json.loads((shapes_model_path("pipeline") / "model_index.json").read_text())["task_methods"]
    assert editing["chosen_on_validation"]["task_methods"] == shipped
    assert editing["chosen_on_validation"]["target_rule"] == DEFAULT_TARGET_RULE
    rate = editing["summary"][f"dsi-{DEFAULT_TARGET_RULE}/auto-validation"]["success"]["rate"]
    count = 8
    edits = split_edits("test", count)
    successes = 0
    for index, (edit, path) in enumerate(zip(edits, _edit_files(tmp_path, edits), strict=True)):
        output = tmp_path / f"out-{index}"
        assert main(["auto-edit", str(path), edit.edited_caption, "--source-prompt", edit.input_caption,
                     "--steps", str(editing["steps"]), "--guidance-scale", str(editing["guidance_scale"]),
                     "--output", str(output)]) == 0
        successes += judge_edit(edit.source, edit.instruction, PIL.Image.open(output / "auto-edit.png")).success
    assert _within_noise(successes, count, rate), (successes, rate)
