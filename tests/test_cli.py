"""The command line: every subcommand's help, smoke runs on the shipped samples, and bad input handled
with a one-line message and exit status 2 (never a traceback)."""

import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_uip2p.cli import build_parser, main
from diffusers_uip2p.cli.images import resolve_image
from diffusers_uip2p.pipelines.editing import DEFAULT_TARGET_RULE
from diffusers_uip2p.shapes.pretrained import shapes_model_path

SUBCOMMANDS = ("edit", "auto-edit", "reconstruct", "train", "evaluate", "convert")


def test_reconstruct_writes_picture_and_report(tmp_path, capsys):
    assert main(["reconstruct", "--steps", "5", "--output", str(tmp_path), "--scale", "1"]) == 0
    text = (tmp_path / "reconstruction.json").read_text()
    report = json.loads(text)
    assert report["dsi"]["latent_relative_error"] == 0.0
    assert "Infinity" not in text and report["dsi"]["psnr_vs_vae_round_trip_db"] is None  # strict JSON: +inf
    assert report["dsi"]["psnr_vs_vae_round_trip_db_reason"].startswith("+inf")
    assert report["ddim"]["latent_relative_error"] > 1e-3
    assert report["dsi"]["unet_calls"] == 2 * 5 - 2 + 2 * 5 - 3
    assert report["ddim"]["unet_calls"] == 2 * (2 * 5 - 2)
    assert PIL.Image.open(tmp_path / "reconstruction-grid.png").size == (4 * 64, 64)  # input | VAE | DSI | DDIM
    assert PIL.Image.open(tmp_path / "reconstruction.png").size == (64, 64)
    assert "DSI" in capsys.readouterr().out


def test_convert_widens_a_text_to_image_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    from diffusers_uip2p import UIP2PPipeline
    from diffusers_uip2p.testing import tiny_text_to_image_components

    components = tiny_text_to_image_components()
    StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "t2i")
    assert main(["convert", "--model", str(tmp_path / "t2i"), "--output", str(tmp_path / "ip2p")]) == 0
    pipe = UIP2PPipeline.from_pretrained(tmp_path / "ip2p")
    assert pipe.unet.config.in_channels == 8
    assert torch.equal(pipe.unet.conv_in.weight[:, 4:], torch.zeros_like(pipe.unet.conv_in.weight[:, 4:]))
    assert torch.equal(pipe.unet.conv_in.weight[:, :4], components["unet"].conv_in.weight)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = subprocess.run([sys.executable, "-m", "diffusers_uip2p", command, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "Traceback" not in result.stderr


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_auto_edit_on_a_sample_prints_the_choice(tmp_path, capsys):
    target = ("a large yellow square in the center and a large black hexagon on the right on a striped gray "
              "background")
    assert main(["auto-edit", "striped", target, "--steps", "5", "--output", str(tmp_path), "--scale", "1"]) == 0
    report = json.loads((tmp_path / "auto-edit.json").read_text())
    shipped = json.loads((shapes_model_path("pipeline") / "model_index.json").read_text())["task_methods"]
    assert report["edit_task"] == "object_replacement" and report["edit_method"] == shipped["object_replacement"]
    assert report["source_prompt"].startswith("a large yellow hexagon")  # the sample's own caption
    assert PIL.Image.open(tmp_path / "auto-edit-grid.png").size == (3 * 64, 64)  # input | reconstruction | edit
    assert report["reconstruction_latent_relative_error"] == 0.0  # the source branch is exact
    assert set(report["task_probabilities"]) == {"object_replacement", "object_adding", "action_editing",
                                                 "scene_editing", "style_editing"}
    assert report["edit_parameters"]["target_rule"] == DEFAULT_TARGET_RULE
    out = capsys.readouterr().out
    assert f"edit_method: {shipped['object_replacement']}" in out and "edit_task: object_replacement" in out
    assert main(["auto-edit", "striped", target, "--steps", "3", "--output", str(tmp_path / "paper"), "--scale", "1",
                 "--target-rule", "coupled"]) == 0
    assert json.loads((tmp_path / "paper" / "auto-edit.json").read_text())["edit_parameters"]["target_rule"] == "coupled"


@pytest.fixture(scope="module")
def tiny_uip2p_folder(tmp_path_factory):
    """A tiny UIP2P folder (random weights) for the edit command's plumbing, independent of shipped models."""
    from diffusers_uip2p import UIP2PPipeline
    from diffusers_uip2p.testing import tiny_instruct_pix2pix_components

    folder = tmp_path_factory.mktemp("uip2p")
    UIP2PPipeline(**tiny_instruct_pix2pix_components(), safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False).save_pretrained(folder)
    return folder


def test_edit_with_reverse_and_candidates_ranks_them(tiny_uip2p_folder, tmp_path, capsys):
    assert main(["edit", "three-objects", "make the red triangle blue", "--reverse", "make the blue triangle red",
                 "--candidates", "2", "--steps", "3", "--model", str(tiny_uip2p_folder), "--output", str(tmp_path),
                 "--scale", "1"]) == 0
    report = json.loads((tmp_path / "edit.json").read_text())
    assert len(report["reversibility"]) == 2 and report["reversibility"][0] >= report["reversibility"][1]
    assert report["chosen_seed"] == report["seeds"][0]
    grid = PIL.Image.open(tmp_path / "edit-grid.png")
    assert grid.width == 3 * grid.height  # input | edit | reverse edit
    assert "reversibility" in capsys.readouterr().out


def test_train_defaults_to_the_shapes_world(tmp_path):
    from diffusers_uip2p.cli import _with_shapes_defaults
    from diffusers_uip2p.shapes.pretrained import shapes_model_path

    argv = _with_shapes_defaults([f"--output_dir={tmp_path}", "--max_train_steps", "1"])
    assert argv[argv.index("--pretrained_model_name_or_path") + 1] == str(shapes_model_path("pipeline"))
    assert argv[argv.index("--clip_model_name_or_path") + 1] == str(shapes_model_path("clip"))
    data = argv[argv.index("--train_data") + 1]
    assert sum(1 for _ in open(f"{data}/records.jsonl")) == 2000
    given = ["--pretrained_model_name_or_path", "my-model", "--train_data", "d", "--output_dir", "o"]
    assert _with_shapes_defaults(given) == given


# ---------------------------------------------------------------------------------------------- bad input


def _fails_cleanly(argv, capsys, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bad-images")
    (tmp_path / "notes.png").write_text("this is text, not a PNG")
    (tmp_path / "folder").mkdir()
    PIL.Image.new("RGB", (10000, 10000)).save(tmp_path / "huge.png")  # ~150 kB: PNG compresses flat colour
    truncated = tmp_path / "truncated.png"
    PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    return tmp_path


@pytest.mark.parametrize("command", [["reconstruct"], ["auto-edit"], ["edit"]])
@pytest.mark.parametrize("name, expected", [
    ("missing.png", "no such file"), ("folder", "is a directory"), ("notes.png", "not an image"),
    ("huge.png", "10000×10000"), ("truncated.png", "could not be decoded"),
])
def test_bad_images_get_a_clear_message(command, name, expected, bad_images, capsys):
    text = [] if command == ["reconstruct"] else ["make the red circle blue"]
    _fails_cleanly(command + [str(bad_images / name), *text, "--output", str(bad_images / "out")], capsys,
                   "IMAGE", expected)
    assert not (bad_images / "out").exists()  # nothing written


def test_candidates_without_a_reverse_instruction_are_refused(capsys, tmp_path):
    _fails_cleanly(["edit", "three-objects", "make the red triangle blue", "--candidates", "3", "--output",
                    str(tmp_path)], capsys, "--candidates 3", "--reverse")


def test_missing_image_lists_the_shipped_samples(capsys):
    _fails_cleanly(["reconstruct", "no-such-scene"], capsys, "three-objects", "striped")


def test_words_outside_the_shapes_vocabulary_name_it(capsys, tmp_path):
    err = _fails_cleanly(["edit", "three-objects", "make the triangle magenta", "--output", str(tmp_path)], capsys,
                         "magenta", "colours: black, blue")
    assert "instruction" in err
    _fails_cleanly(["auto-edit", "striped", "a large yellow dodecagon on a gray background", "--output",
                    str(tmp_path)], capsys, "dodecagon", "shapes: circle, hexagon, square, triangle")


def test_another_model_is_not_held_to_the_shapes_vocabulary(tiny_uip2p_folder, tmp_path):
    assert main(["edit", "three-objects", "make it look like Van Gogh", "--steps", "2", "--model",
                 str(tiny_uip2p_folder), "--output", str(tmp_path)]) == 0


def test_a_non_sample_image_needs_its_caption(tmp_path, capsys):
    PIL.Image.new("RGB", (64, 64), "red").save(tmp_path / "red.png")
    _fails_cleanly(["reconstruct", str(tmp_path / "red.png")], capsys, "--prompt is required")


def test_resolve_image_prefers_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "striped.png")
    assert resolve_image("striped.png").resolve() == (tmp_path / "striped.png").resolve()
    assert resolve_image("striped").parent.name == "scenes"


def test_reports_are_strict_json():
    """Python's json writes Infinity and NaN, which strict parsers refuse: null and a reason instead."""
    import json
    import math

    from diffusers_uip2p import strict_json

    report = {"psnr": math.inf, "error": 0.5, "per_scale": [1.0, math.nan], "nested": {"x": -math.inf}}
    text = strict_json.dumps(report)
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in {text}")) == {"psnr": None, "psnr_reason": "+inf (no error at all: identical inputs)", "error": 0.5,
                                "per_scale": [1.0, None], "per_scale_reason": {"1": "NaN (undefined)"},
                                "nested": {"x": None, "x_reason": "-inf"}}


@pytest.mark.parametrize("argv", [["--help"], ["edit", "--help"], ["auto-edit", "--help"], ["edit", "x", "y", "--steps", "0"]])
def test_help_and_argument_errors_import_no_torch(argv):
    """Start-up stays fast: the parser and its errors come before any heavy import (the commands load torch)."""
    import subprocess
    import sys

    code = ("import sys\nfrom diffusers_uip2p.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "assert not {'torch', 'diffusers', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("typed, read", [("Make the Yellow circle BLUE!", "make the yellow circle blue"),
                                         ("move the circle upwards", "move the yellow circle up"),
                                         ("make the triangle black.", "make the red triangle black")])
def test_a_sample_instruction_is_read_in_the_templates_words_before_any_model(typed, read):
    import argparse

    from diffusers_uip2p.cli import commands
    from diffusers_uip2p.cli.images import open_image

    args = argparse.Namespace(model=None)
    path = open_image("three-objects")[1]
    commands._vocabulary_check(args, instruction=typed, forgiving=True)
    assert commands._judgeable(args, path, instruction=typed) == {"instruction": read}


def test_the_help_lists_every_shipped_model():
    from diffusers_uip2p.cli import SHIPPED_MODELS
    from diffusers_uip2p.shapes.pretrained import MODEL_NAMES

    assert sorted(SHIPPED_MODELS) == sorted(MODEL_NAMES)


def test_edit_saves_the_instructions_attention_maps_when_asked(tmp_path):
    assert main(["edit", "three-objects", "make the red triangle blue", "--steps", "2", "--attention",
                 "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "edit.json").read_text())
    assert str(tmp_path / "edit-attention.png") in report["files"]
    assert PIL.Image.open(tmp_path / "edit-attention.png").width == 5 * 96  # one cell per word of the instruction
