"""A catalogue of bad and unusual inputs, each with its exact outcome: the converted result, or the error type
with the argument's name in the message. Table-driven, on shared tiny models."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_uip2p import UIP2PPipeline
from diffusers_uip2p.checks import check_number
from diffusers_uip2p.pipelines.validation import check_generator, to_unit_pixels
from diffusers_uip2p.testing import tiny_instruct_pix2pix_components

RNG = np.random.RandomState(0)
RGB = RNG.randint(0, 256, (16, 16, 3), np.uint8)
UNIT = torch.from_numpy(RGB).permute(2, 0, 1)[None].float() / 255  # the expected [0, 1] NCHW pixels


def _pil(mode):
    return PIL.Image.fromarray(RGB).convert(mode)


# ---------------------------------------------------------------- images: accepted forms, converted exactly

ACCEPTED = [
    ("PIL RGB", PIL.Image.fromarray(RGB), UNIT),
    ("PIL RGBA", PIL.Image.fromarray(RGB).convert("RGBA"), UNIT),
    ("PIL grey", _pil("L"), to_unit_pixels(_pil("L").convert("RGB"))),
    ("PIL palette", _pil("P"), to_unit_pixels(_pil("P").convert("RGB"))),
    ("PIL CMYK", _pil("CMYK"), to_unit_pixels(_pil("CMYK").convert("RGB"))),
    ("PIL 16-bit grey", _pil("L").convert("I"), to_unit_pixels(_pil("L").convert("I").convert("RGB"))),
    ("numpy HWC uint8", RGB, UNIT),
    ("numpy NHWC uint8", RGB[None], UNIT),
    ("numpy HWC float [0, 1]", RGB.astype(np.float32) / 255, UNIT),
    ("numpy HWC float [0, 255]", RGB.astype(np.float32), UNIT),
    ("numpy HWC float64 [0, 255]", RGB.astype(np.float64), UNIT),
    ("numpy HW1 grey", RGB[..., :1], UNIT[:, :1].expand(-1, 3, -1, -1)),
    ("torch CHW uint8", torch.from_numpy(RGB).permute(2, 0, 1), UNIT),
    ("torch NCHW uint8", torch.from_numpy(RGB).permute(2, 0, 1)[None], UNIT),
    ("torch CHW [0, 1]", UNIT[0], UNIT),
    ("torch NCHW [-1, 1]", UNIT * 2 - 1, UNIT),
    ("torch NCHW float64 [0, 1]", UNIT.double(), UNIT),
    ("torch 1-channel", UNIT[:, :1], UNIT[:, :1].expand(-1, 3, -1, -1)),
    ("list of two PIL", [PIL.Image.fromarray(RGB)] * 2, torch.cat([UNIT] * 2)),
    ("list of numpy and torch", [RGB, UNIT[0]], torch.cat([UNIT] * 2)),
]


@pytest.mark.parametrize("name, image, expected", ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_accepted_image_forms_convert_exactly(name, image, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RGBA's alpha warning has its own test
        got = to_unit_pixels(image, vae_scale_factor=2)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.allclose(got, expected.float(), atol=1e-6), (got - expected).abs().max()


REFUSED = [
    ("numpy HW (no channel axis)", RGB[..., 0], ValueError, r"`image` is a numpy uint8 array of shape \(16, 16\); expected"),
    ("numpy CHW", RGB.transpose(2, 0, 1).copy(), ValueError, r"with 16 channels.*channels-first: numpy arrays are HWC"),
    ("torch HWC", torch.from_numpy(RGB), ValueError, r"with 16 channels.*channels-last: tensors are CHW"),
    ("numpy RGBA", np.dstack([RGB, RGB[..., :1]]), ValueError, r"with 4 channels; expected 1 \(grey\) or 3 \(RGB\)"),
    ("torch 4 channels", torch.zeros(1, 4, 16, 16), ValueError, r"with 4 channels"),
    ("numpy 5-D", RGB[None, None], ValueError, r"shape \(1, 1, 16, 16, 3\); expected"),
    ("numpy negative floats", RGB.astype(np.float32) / 127.5 - 1, ValueError, r"values in \[-1, 1\].*\[0, 1\] or \[0, 255\]"),
    ("numpy floats over 255", RGB.astype(np.float32) * 4, ValueError, r"values in \[0, 1020\]"),
    ("torch floats in [0, 255]", UNIT * 255, ValueError, r"values in \[0, 255\].*\[0, 1\] or \[-1, 1\]"),
    ("torch floats under -1", UNIT * 4 - 2, ValueError, r"none of the ranges accepted"),
    ("numpy NaN", np.full((16, 16, 3), np.nan, np.float32), ValueError, r"`image` .* contains NaN or infinite values"),
    ("torch inf", torch.full((1, 3, 16, 16), float("inf")), ValueError, r"contains NaN or infinite values"),
    ("numpy int64", RGB.astype(np.int64), ValueError, r"expected uint8 or float values"),
    ("numpy bool", RGB > 128, ValueError, r"expected uint8 or float values"),
    ("a path", "cat.png", TypeError, r"`image` is a str; expected PIL images"),
    ("None in a list", [PIL.Image.fromarray(RGB), None], TypeError, r"`image`\[1\] is a NoneType"),
    ("empty list", [], ValueError, r"`image` is an empty list"),
    ("two sizes", [RGB, RGB[:8]], ValueError, r"different sizes"),
    ("smaller than the VAE factor", RGB[:1, :1], ValueError, r"at least 2×2 pixels"),
]


@pytest.mark.parametrize("name, image, error, match", REFUSED, ids=[case[0] for case in REFUSED])
def test_refused_image_forms_say_what_they_saw(name, image, error, match):
    with pytest.raises(error, match=match):
        to_unit_pixels(image, vae_scale_factor=2)


def test_alpha_and_odd_sizes_warn_and_the_pixel_limit_refuses():
    with pytest.warns(UserWarning, match="alpha channel; it is dropped"):
        to_unit_pixels(PIL.Image.fromarray(RGB).convert("RGBA"), vae_scale_factor=2)
    odd = PIL.Image.fromarray(RNG.randint(0, 256, (61, 63, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"`image` is 63×61; .* resized to 56×56"):
        assert to_unit_pixels(odd, vae_scale_factor=8).shape == (1, 3, 56, 56)
    with pytest.raises(ValueError, match=r"64×64 = 4,096 pixels, over the limit of 1,000 \(`max_pixels`\)"):
        to_unit_pixels(np.zeros((64, 64, 3), np.uint8), max_pixels=1000)


# ---------------------------------------------------------------- numbers and generators

NUMBERS = [
    (float("nan"), {}, ValueError, "must be finite"),
    (float("inf"), {}, ValueError, "must be finite"),
    (-1.0, {"low": 0.0}, ValueError, r"must be ≥ 0.0, got -1.0"),
    (0.0, {"low": 0.0, "low_open": True}, ValueError, r"must be > 0.0, got 0.0"),
    (1.5, {"high": 1.0}, ValueError, r"must be ≤ 1.0, got 1.5"),
    ("7.5", {}, TypeError, "must be a number"),
    (True, {}, TypeError, "must be a number"),
    (2.5, {"integer": True}, TypeError, "must be an int"),
    (None, {}, TypeError, "must be a number"),
]


@pytest.mark.parametrize("value, bounds, error, match", NUMBERS)
def test_numbers_that_mean_nothing_are_refused(value, bounds, error, match):
    with pytest.raises(error, match=f"`x` {match}"):
        check_number(value, "x", **bounds)


def test_numbers_that_mean_something_pass():
    check_number(3, "x", low=1, integer=True)
    check_number(3.0, "x", low=1, integer=True)
    check_number(None, "x", optional=True)
    check_number(1.0, "x", low=0.0, high=1.0)


def test_generator_lists_must_match_the_images():
    check_generator(None, 2)
    check_generator(torch.Generator(), 2)
    check_generator([torch.Generator(), torch.Generator()], 2)
    with pytest.raises(ValueError, match="`generator` holds 3 generators for 2 images"):
        check_generator([torch.Generator()] * 3, 2)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or a list of them"):
        check_generator(0, 2)


# ---------------------------------------------------------------- the pipelines use the layer, before any model runs


@pytest.fixture(scope="module")
def ip2p():
    pipe = UIP2PPipeline(**tiny_instruct_pix2pix_components(), safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _edit(pipe, image, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe("make it blue", image=image, output_type="latent", **kwargs).images


@pytest.mark.parametrize("form", ["numpy uint8", "numpy [0, 255] float", "torch CHW uint8", "torch [-1, 1]"])
def test_uip2p_reads_every_form_as_the_same_image(ip2p, form):
    image = {"numpy uint8": RGB, "numpy [0, 255] float": RGB.astype(np.float32),
             "torch CHW uint8": torch.from_numpy(RGB).permute(2, 0, 1), "torch [-1, 1]": UNIT * 2 - 1}[form]
    assert torch.allclose(_edit(ip2p, image), _edit(ip2p, UNIT), atol=1e-5)


def test_uip2p_rgba_and_grey_are_images_not_latents(ip2p):
    with pytest.warns(UserWarning, match="alpha"):
        rgba = _edit(ip2p, PIL.Image.fromarray(RGB).convert("RGBA"))
    assert torch.allclose(rgba, _edit(ip2p, PIL.Image.fromarray(RGB)), rtol=1e-4, atol=1e-4)  # float rounding: RGB PIL takes the parent's path
    assert _edit(ip2p, _pil("L")).shape == (1, 4, 8, 8)


UIP2P_BAD = [
    ({"guidance_scale": float("nan")}, ValueError, "`guidance_scale` must be finite"),
    ({"guidance_scale": -2.0}, ValueError, r"`guidance_scale` must be ≥ 0.0"),
    ({"image_guidance_scale": float("nan")}, ValueError, "`image_guidance_scale` must be finite"),
    ({"image_guidance_scale": -1.0}, ValueError, r"`image_guidance_scale` must be ≥"),
    ({"num_inference_steps": 0}, ValueError, r"`num_inference_steps` must be ≥ 1"),
    ({"num_inference_steps": 2.5}, TypeError, "`num_inference_steps` must be an int"),
    ({"generator": [torch.Generator()] * 2}, ValueError, "`generator` holds 2 generators for 1 images"),
    ({"latents": torch.full((1, 4, 8, 8), float("nan"))}, ValueError, "`latents` contains NaN"),
]


@pytest.mark.parametrize("kwargs, error, match", UIP2P_BAD, ids=[next(iter(c[0])) + "=" + str(c[0][next(iter(c[0]))])[:12]
                                                               for c in UIP2P_BAD])
def test_uip2p_bad_numbers(ip2p, kwargs, error, match):
    with pytest.raises(error, match=match):
        _edit(ip2p, RGB, **kwargs)


def test_uip2p_reverse_arguments_need_the_reverse_instruction(ip2p):
    with pytest.raises(ValueError, match="`reverse_kwargs` configures the reverse edit: give `reverse_instruction`"):
        _edit(ip2p, RGB, reverse_kwargs={"image_guidance_scale": 2.0})
    with pytest.raises(ValueError, match="`num_candidates` > 1 ranks candidates by reversibility"):
        _edit(ip2p, RGB, num_candidates=2)


def test_guidance_below_one_is_said_not_silent(ip2p):
    with pytest.warns(UserWarning, match="`guidance_scale`=0.5 is below 1, which turns guidance off"):
        _edit(ip2p, RGB, guidance_scale=0.5)


AUTO_BAD = [
    ({"guidance_scale": float("nan")}, ValueError, "`guidance_scale` must be finite"),
    ({"guidance_scale": -3.0}, ValueError, "`guidance_scale` must be ≥"),
    ({"num_inference_steps": 0}, ValueError, r"`num_inference_steps` must be ≥ 2"),
    ({"edit_method": "sdedit", "strength": 0.0}, ValueError, r"`strength` must be in \(0.0, 1.0\]"),
    ({"edit_method": "sdedit", "strength": float("nan")}, ValueError, "`strength` must be finite"),
    ({"edit_method": "p2p", "equalizer": {"blue": "strong"}}, TypeError, r"equalizer\) must map words to finite"),
    ({"edit_method": "masactrl", "masactrl_start_step": 50}, ValueError, "`masactrl_start_step` must be in"),
]


@pytest.mark.parametrize("kwargs, error, match", AUTO_BAD, ids=[str(c[0])[:40] for c in AUTO_BAD])
def test_auto_edit_bad_numbers(tiny_edit_pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_edit_pipe("a blue circle", image=RGB, source_prompt="a red circle", num_inference_steps=
                       kwargs.pop("num_inference_steps", 4), output_type="latent", **kwargs)


def test_auto_edit_says_when_strength_is_ignored(tiny_edit_pipe):
    with pytest.warns(UserWarning, match="`strength` applies to SDEdit only; edit_method='p2p' ignores it"):
        tiny_edit_pipe("a blue circle", image=RGB, source_prompt="a red circle", edit_method="p2p", strength=0.3,
                       num_inference_steps=3, output_type="latent")


def test_auto_edit_nan_image_is_refused_before_inversion(tiny_edit_pipe):
    with pytest.raises(ValueError, match=r"`image` \(a numpy float32 array .*\) contains NaN"):
        tiny_edit_pipe.invert(np.full((16, 16, 3), np.nan, np.float32), "a cat", num_inference_steps=3)


def test_an_inversion_belongs_to_its_pipeline_and_size(tiny_edit_pipe):
    from diffusers_uip2p import AutoEditPipeline
    from diffusers_uip2p.testing import tiny_text_to_image_components

    inversion = tiny_edit_pipe.invert(RGB, "a red circle", num_inference_steps=3, output_type="pt")
    other = AutoEditPipeline(**tiny_text_to_image_components(seed=1))
    other.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="`inversion` was made by another pipeline"):
        other("a red circle", inversion=inversion, output_type="latent")
    with pytest.raises(ValueError, match=r"`height`=32 contradicts `inversion`, which holds 16×16 images"):
        tiny_edit_pipe("a red circle", inversion=inversion, height=32, output_type="latent")
    same = tiny_edit_pipe("a red circle", inversion=inversion, height=16, width=16, output_type="latent")
    assert torch.equal(same.latents, inversion.latents)


def test_a_saved_and_reloaded_pipeline_keeps_its_inversions(tiny_edit_pipe, tmp_path):
    """Saving adds bookkeeping keys (_diffusers_version) to the configs; they must not change the signature."""
    from diffusers_uip2p import AutoEditPipeline

    inversion = tiny_edit_pipe.invert(RGB, "a red circle", num_inference_steps=3, output_type="pt")
    tiny_edit_pipe.save_pretrained(tmp_path)
    reloaded = AutoEditPipeline.from_pretrained(tmp_path)
    assert reloaded.model_signature() == tiny_edit_pipe.model_signature() == inversion.model_signature


# ---------------------------------------------------------------- the command line: one line, exit 2, before any model

CLI_BAD = [
    (["edit", "three-objects", ""], "instruction '' has no word in it"),
    (["edit", "three-objects", "🎨🎨"], "has no word in it"),
    (["edit", "three-objects", "make the red triangle blue", "--steps", "0"], "--steps: must be a positive integer"),
    (["edit", "three-objects", "make the red triangle blue", "--guidance-scale", "nan"],
     "--guidance-scale: must be a finite number >= 0"),
    (["edit", "three-objects", "make the red triangle blue", "--candidates", "0"], "--candidates: must be a positive"),
    (["edit", "three-objects", "make the green hexagon blue"], "is not an edit the Shapes evaluator can read on "
                                                              "three-objects"),
    (["auto-edit", "striped", "", "--steps", "3"], "target prompt '' has no word in it"),
    (["reconstruct", "three-objects", "--steps", "-2"], "--steps: must be a positive integer"),
]


@pytest.mark.parametrize("argv, message", CLI_BAD, ids=[" ".join(c[0])[:50] for c in CLI_BAD])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    from diffusers_uip2p import cli
    from diffusers_uip2p.shapes import pretrained

    monkeypatch.setattr(pretrained, "load_shapes_editor", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(pretrained, "load_shapes_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    try:
        status = cli.main([*argv, "--output", str(tmp_path)])
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and message in err.strip().splitlines()[-1], err  # argparse's usage, then the one line
    assert "Traceback" not in err


def test_cli_train_refuses_a_bad_mode_before_exporting_records(tmp_path, capsys):
    from diffusers_uip2p import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--mode", "foo", "--output_dir", str(tmp_path / "run")])
    assert "invalid choice: 'foo'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "shapes-train-records").exists()


# ---------------------------------------------------------------- the scheduler


def _zeros(x, t):
    return torch.zeros_like(x)


SCHEDULER_BAD = [
    (lambda s: s.set_timesteps(0), ValueError, "num_inference_steps must be between 2"),
    (lambda s: s.set_timesteps(2.5), TypeError, "num_inference_steps must be an int"),
    (lambda s: s.set_timesteps(10, strength=float("nan")), ValueError, r"strength must be in \(0, 1\]"),
    (lambda s: s.invert(torch.full((1, 4, 8, 8), float("nan")), _zeros), ValueError, "latents contain NaN"),
    (lambda s: s.invert(torch.zeros(4, 8, 8), _zeros), ValueError, "latents must be a 4-D tensor"),
    (lambda s: s.invert(torch.zeros(1, 4, 8, 8), lambda x, t: torch.zeros(1, 4, 4, 4)), ValueError,
     r"model_fn returned torch.Size\(\[1, 4, 4, 4\]\) for latents of shape \(1, 4, 8, 8\)"),
    (lambda s: s.invert(torch.zeros(1, 4, 8, 8), lambda x, t: torch.full_like(x, float("nan"))), FloatingPointError,
     "model_fn returned NaN"),
    (lambda s: s.sample(s.invert(torch.zeros(1, 4, 8, 8), _zeros), lambda x, t: torch.full_like(x, float("inf"))),
     FloatingPointError, "sampled latents are not finite"),
    (lambda s: s.begin(torch.zeros(1)), TypeError, "state must be the DualScheduleState"),
    (lambda s: s.step(torch.zeros(1, 4, 4, 4), s.timesteps[0], s.begin(s.invert(torch.zeros(1, 4, 8, 8), _zeros))),
     ValueError, r"model_output has shape \(1, 4, 4, 4\) but sample has \(1, 4, 8, 8\)"),
]


@pytest.mark.parametrize("call, error, match", SCHEDULER_BAD, ids=[c[2][:40] for c in SCHEDULER_BAD])
def test_scheduler_bad_input(call, error, match):
    from diffusers_uip2p import DualScheduleInversionScheduler

    scheduler = DualScheduleInversionScheduler()
    scheduler.set_timesteps(5)
    with pytest.raises(error, match=match):
        call(scheduler)


@pytest.mark.parametrize("config, match", [({"auxiliary_position": 0.0}, "auxiliary_position must lie strictly"),
                                           ({"beta_start": 0.1, "beta_end": 0.01}, "0 < beta_start < beta_end < 1"),
                                           ({"prediction_type": "flow"}, "prediction_type must be one of")])
def test_scheduler_bad_config(config, match):
    from diffusers_uip2p import DualScheduleInversionScheduler

    with pytest.raises(ValueError, match=match):
        DualScheduleInversionScheduler(**config)
