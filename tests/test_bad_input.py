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


# ---------------------------------------------------------------- attention controllers and their pictures

S, T = "a red circle on a white background", "a blue circle on a white background"


def _store():
    from diffusers_uip2p.attention import AttentionStore, PassthroughController

    return AttentionStore(PassthroughController(0))


def _maps(attention, **kwargs):
    from diffusers_uip2p.attention import draw_token_maps

    return draw_token_maps(PIL.Image.new("RGB", (16, 16)), attention, **kwargs)


ATTENTION_BAD = [
    ("replace, word counts differ", lambda A, tok: A.AttentionReplace([S, "a big blue circle on a white background"], tok),
     ValueError, "`source` and `target` have different word counts"),
    ("replace, one prompt", lambda A, tok: A.AttentionReplace([S], tok), ValueError,
     "`prompts` needs a source and at least one target"),
    ("cross steps < 0", lambda A, tok: A.AttentionReplace([S, T], tok, cross_replace_steps=-0.1), ValueError,
     "`cross_replace_steps` must satisfy 0 ≤ start ≤ end ≤ 1"),
    ("cross steps > 1", lambda A, tok: A.AttentionReplace([S, T], tok, cross_replace_steps=2.0), ValueError,
     "`cross_replace_steps` must satisfy"),
    ("cross steps NaN", lambda A, tok: A.AttentionReplace([S, T], tok, cross_replace_steps=float("nan")), ValueError,
     "`cross_replace_steps` must satisfy"),
    ("self steps a str", lambda A, tok: A.AttentionReplace([S, T], tok, self_replace_steps="0.4"), TypeError,
     "`self_replace_steps` must be a fraction or a"),
    ("self level < 0", lambda A, tok: A.AttentionReplace([S, T], tok, self_replace_min_level=-1), ValueError,
     "`self_replace_min_level` must be an int ≥ 0"),
    ("refine padding", lambda A, tok: A.AttentionRefine([S, T], tok, padding="left"), ValueError,
     "`padding` must be one of follow_end, same_position"),
    ("reweight, unknown word", lambda A, tok: A.AttentionReweight([S, T], tok, scales={"dog": 2.0}), ValueError,
     "The word 'dog' in `scales` is in none of the target prompts"),
    ("reweight, NaN scale", lambda A, tok: A.AttentionReweight([S, T], tok, scales={"blue": float("nan")}), TypeError,
     "`scales` \\(the equalizer\\) must map words to finite numbers"),
    ("reweight, str scale", lambda A, tok: A.AttentionReweight([S, T], tok, scales={"blue": "strong"}), TypeError,
     "must map words to finite numbers, got 'blue': 'strong'"),
    ("reweight, no scales", lambda A, tok: A.AttentionReweight([S, T], tok, scales={}), TypeError,
     "`scales` must be a non-empty dict"),
    ("masactrl start step < 0", lambda A, tok: A.MutualSelfAttention(start_step=-1), ValueError,
     "`start_step` must be a non-negative int"),
    ("masactrl start layer < 0", lambda A, tok: A.MutualSelfAttention(start_layer=-2), ValueError,
     "`start_layer` must be a non-negative int"),
    ("masactrl total < start", lambda A, tok: A.MutualSelfAttention(start_layer=10, total_layers=5), ValueError,
     "`total_layers` must be positive and at least `start_layer`"),
    ("masked masactrl, one word list", lambda A, tok: A.MaskedMutualSelfAttention([S, T], tok, foreground_words=["dog"]),
     ValueError, "`foreground_words` needs one entry .* per prompt"),
    ("masked masactrl threshold", lambda A, tok: A.MaskedMutualSelfAttention([S, T], tok, foreground_words=["circle"],
                                                                            threshold=1.5),
     ValueError, r"`threshold` must be in \[0, 1\]"),
    ("word not in prompt", lambda A, tok: A.word_token_indices(tok, S, "dog"), ValueError,
     "The word 'dog' is not in the prompt"),
    ("empty word", lambda A, tok: A.word_token_indices(tok, S, ""), ValueError, "`word` must be a non-empty str"),
    ("replace mapper lengths", lambda A, tok: A.replace_mapper(tok, S, "a circle"), ValueError,
     "different word counts \\(7 and 2\\)"),
    ("refine alignment padding", lambda A, tok: A.refine_alignment(tok, S, T, padding="x"), ValueError,
     "`padding` must be one of"),
    ("maps: cell size 0", lambda A, tok: _maps([("a", torch.rand(4, 4))], cell_size=0), ValueError,
     "`cell_size` must be ≥ 8, got 0"),
    ("maps: 0 columns", lambda A, tok: _maps([("a", torch.rand(4, 4))], columns=0), ValueError,
     "`columns` must be ≥ 1, got 0"),
    ("maps: none", lambda A, tok: _maps([]), ValueError, "`token_maps` is empty"),
    ("maps: a 3-D map", lambda A, tok: _maps([("a", torch.rand(2, 4, 4))]), ValueError,
     r"`token_maps\[0\]` must be a \(token, \[h, w\] tensor\) pair, got a map of shape \(2, 4, 4\)"),
    ("maps: NaN map", lambda A, tok: _maps([("a", torch.full((4, 4), float("nan")))]), ValueError,
     r"`token_maps\[0\]` contains NaN"),
    ("maps: not pairs", lambda A, tok: _maps([torch.rand(4, 4)]), ValueError, r"`token_maps\[0\]` must be a"),
    ("store: resolution 0", lambda A, tok: A.AttentionStore(A.PassthroughController(0), resolutions=[0]), ValueError,
     "`resolutions` must be ≥ 1, got 0"),
    ("store: resolutions an int", lambda A, tok: A.AttentionStore(A.PassthroughController(0), resolutions=16),
     ValueError, "`resolutions` must be a non-empty list of ints"),
    ("store: negative step", lambda A, tok: A.AttentionStore(A.PassthroughController(0), steps=[-1]), ValueError,
     "`steps` must be ≥ 0, got -1"),
    ("store: records nothing", lambda A, tok: A.AttentionStore(A.PassthroughController(0), cross=False), ValueError,
     "`cross` and `self_attention` are both False"),
    ("local blend, unknown word", lambda A, tok: A.LocalBlend(_store(), [S, T], tok, words=["dog", "dog"]), ValueError,
     "The word 'dog' is not in the prompt"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in ATTENTION_BAD], ids=[c[0] for c in ATTENTION_BAD])
def test_attention_bad_input(call, error, match, tiny_edit_pipe):
    from diffusers_uip2p import attention

    with pytest.raises(error, match=match):
        call(attention, tiny_edit_pipe.tokenizer)


# ---------------------------------------------------------------- the task classifier and the word rules

def _classifier(**kwargs):
    from diffusers_uip2p.classifier import EditTaskClassifier

    return EditTaskClassifier(**{"input_dim": 8, "num_tokens": 4, "hidden_dim": 8, "num_heads": 2, "num_layers": 1,
                                 **kwargs})


CLASSIFIER_BAD = [
    ("rules: empty source", lambda C: C.classify_by_rules("", T), ValueError, "`source` must contain a word"),
    ("rules: None target", lambda C: C.classify_by_rules(S, None), TypeError, "`target` must be a str, got NoneType"),
    ("rules: emoji target", lambda C: C.classify_by_rules(S, "🎨"), ValueError, "`target` must contain a word"),
    ("unknown task", lambda C: C.check_task("recolour"), ValueError, "`task` must be one of object_replacement"),
    ("compare mode", lambda C: _classifier(compare_tokens="maybe"), ValueError, "`compare_tokens` must be one of"),
    ("heads do not divide", lambda C: _classifier(hidden_dim=9), ValueError,
     r"`hidden_dim` \(9\) must be a multiple of `num_heads` \(2\)"),
    ("dropout > 1", lambda C: _classifier(dropout=1.5), ValueError, r"`dropout` must be in \[0.0, 1.0\], got 1.5"),
    ("unknown tasks", lambda C: _classifier(tasks=("recolour",)), ValueError, "`tasks` must be one of"),
    ("repeated tasks", lambda C: _classifier(tasks=("style_editing", "style_editing")), ValueError,
     "`tasks` must be distinct edit tasks"),
    ("odd token count", lambda C: _classifier(num_tokens=5), ValueError, "`num_tokens` counts source and target"),
    ("zero layers", lambda C: _classifier(num_layers=0), ValueError, "`num_layers` must be ≥ 1, got 0"),
    ("float width", lambda C: _classifier(hidden_dim=8.5), TypeError, "`hidden_dim` must be an int"),
    ("wrong embedding width", lambda C: _classifier()(torch.rand(1, 2, 7), torch.rand(1, 2, 7)), ValueError,
     r"`source_embeds` must have shape \[batch, 2, 8\]"),
    ("triples split", lambda C: C.load_triples("dev"), ValueError, "`split` must be one of train, test"),
    ("negative triple count", lambda C: C.generate_triples("train", -1), ValueError, "`num` must be an integer from 1"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CLASSIFIER_BAD], ids=[c[0] for c in CLASSIFIER_BAD])
def test_classifier_bad_input(call, error, match):
    from diffusers_uip2p import classifier

    with pytest.raises(error, match=match):
        call(classifier)


# ---------------------------------------------------------------- evaluation: metrics, intervals, Elo, runners

def _intervals():
    from diffusers_uip2p.evaluation import intervals

    return intervals


IMAGES = torch.rand(1, 3, 8, 8)
EVALUATION_BAD = [
    ("wilson k > n", lambda E: _intervals().wilson_interval(5, 3), ValueError, "`successes` must lie in 0..n=3"),
    ("wilson n = 0", lambda E: _intervals().wilson_interval(0, 0), ValueError, "`n` must be positive"),
    ("wilson k < 0", lambda E: _intervals().wilson_interval(-1, 3), ValueError, "`successes` must lie in"),
    ("paired lengths", lambda E: _intervals().compare_paired([True, False], [True]), ValueError,
     "paired outcomes must be two flat lists of the same length"),
    ("mcnemar lengths", lambda E: _intervals().mcnemar_p([True], [True, False]), ValueError,
     "paired outcomes must be two flat lists"),
    ("bootstrap level", lambda E: _intervals().paired_bootstrap([1.0, 2.0], [1.0, 2.0], level=1.5), ValueError,
     r"`level` must be in \(0, 1\], got 1.5"),
    ("bootstrap resamples", lambda E: _intervals().paired_bootstrap([1.0], [1.0], num_resamples=0), ValueError,
     "`num_resamples` must be ≥ 1"),
    ("psnr shapes", lambda E: E.psnr(IMAGES, torch.rand(1, 3, 4, 4)), ValueError, "pred and target must have the same"),
    ("psnr NaN image", lambda E: E.psnr(torch.full_like(IMAGES, float("nan")), IMAGES), ValueError,
     "`pred` contains NaN"),
    ("psnr NaN reference", lambda E: E.psnr(IMAGES, torch.full_like(IMAGES, float("inf"))), ValueError,
     "`target` contains NaN or infinite"),
    ("psnr range 0", lambda E: E.psnr(IMAGES, IMAGES, data_range=0), ValueError, "`data_range` must be > 0"),
    ("relative error shapes", lambda E: E.relative_error(torch.rand(2, 3), torch.rand(3, 2)), ValueError,
     "`reconstruction` and `reference` must have the same shape"),
    ("relative error to zero", lambda E: E.relative_error(torch.rand(2, 3), torch.zeros(2, 3)), ValueError,
     "`reference` is all zeros"),
    ("relative error NaN", lambda E: E.relative_error(torch.full((2, 3), float("nan")), torch.rand(2, 3)), ValueError,
     "`reconstruction` contains NaN"),
    ("DDIM budget of 1 step", lambda E: E.ddim_steps_for_same_budget(1), ValueError, "`num_inference_steps` must be ≥ 2"),
    ("Elo short vote", lambda E: E.elo_ratings([("a",)]), ValueError, "vote 0 must be \\(model_a, model_b, outcome\\)"),
    ("Elo outcome", lambda E: E.elo_ratings([("a", "b", "c")]), ValueError, "a vote's outcome must be 'a', 'b', 'draw'"),
    ("Elo no votes", lambda E: E.elo_ratings([]), ValueError, "votes is empty"),
    ("Elo level", lambda E: E.elo_confidence([("a", "b", "a")], level=2), ValueError, r"level must lie in \(0, 1\]"),
    ("Elo orders", lambda E: E.elo_confidence([("a", "b", "a")], num_orders=0), ValueError,
     "num_orders must be at least 1"),
    ("unknown metric", lambda E: E.Metrics(["psnrr"]), ValueError, r"unknown metric\(s\) \['psnrr'\]"),
    ("odd PIE mask", lambda E: E.decode_pie_mask([1, 2, 3], 4, 4), ValueError, "rle must hold \\(start, length\\) pairs"),
    ("negative PIE run", lambda E: E.decode_pie_mask([-1, 2], 4, 4), ValueError, "rle runs need a non-negative start"),
    ("rank past world", lambda E: E.ShardedRun("unused", {}, rank=2, world_size=2), ValueError,
     r"rank must be in \[0, world_size\)"),
    ("world size 0", lambda E: E.ShardedRun("unused", {}, rank=0, world_size=0), ValueError, "with world_size >= 1"),
    ("Shapes split", lambda E: E.ShapesBenchmark("dev"), ValueError, "`split` must be one of train, validation, test"),
    ("Shapes 0 edits", lambda E: E.ShapesBenchmark("test", 0), ValueError, "`num_edits` must be ≥ 1, got 0"),
    ("Shapes edit index", lambda E: E.ShapesBenchmark("test", 2)[2], IndexError, "edit 2 is outside"),
    ("run_shapes 0 edits", lambda E: E.run_shapes(None, "unused", num_edits=0), ValueError, "`num_edits` must be ≥ 1"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in EVALUATION_BAD], ids=[c[0] for c in EVALUATION_BAD])
def test_evaluation_bad_input(call, error, match):
    from diffusers_uip2p import evaluation

    with pytest.raises(error, match=match):
        call(evaluation)


def test_a_large_shapes_benchmark_is_made_lazily():
    """A million edits used to be drawn up front (minutes); each edit is now drawn from its index when read."""
    from diffusers_uip2p.evaluation import ShapesBenchmark
    from diffusers_uip2p.shapes.dataset import split_edits

    benchmark = ShapesBenchmark("test", 10**6)
    assert len(benchmark) == 10**6
    assert benchmark[3].turns[0].instruction == split_edits("test", 4)[3].instruction


def test_run_reconstruction_checks_its_numbers_before_any_work(tiny_edit_pipe, tmp_path):
    from diffusers_uip2p.evaluation import ShapesBenchmark, run_reconstruction

    benchmark = ShapesBenchmark("test", 1)
    for kwargs, match in [({"guidance_scales": ()}, "`guidance_scales` must be a non-empty sequence"),
                          ({"guidance_scales": 7.5}, "`guidance_scales` must be a non-empty sequence"),
                          ({"guidance_scales": (1.0, float("nan"))}, "`guidance_scales` must be finite"),
                          ({"num_inference_steps": 1}, "`num_inference_steps` must be ≥ 2")]:
        with pytest.raises(ValueError, match=match):
            run_reconstruction(benchmark, tiny_edit_pipe, tmp_path, model_id="tiny", **kwargs)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- training options, refused by the parser

TRAIN_BAD = [
    (["--learning_rate=-1e-4"], "--learning_rate must be a finite number > 0"),
    (["--learning_rate", "nan"], "--learning_rate must be a finite number > 0"),
    (["--max_grad_norm", "0"], "--max_grad_norm must be a finite number > 0"),
    (["--conv_in_lr_scale", "inf"], "--conv_in_lr_scale must be a finite number > 0"),
    (["--ema_decay", "1.0"], r"--ema_decay must be in \[0, 1\)"),
    (["--conditioning_dropout_prob", "0.5"], r"--conditioning_dropout_prob must be in \[0, 1/3\]"),
    (["--lambda_clip", "inf"], "--lambda_clip must be a finite number >= 0"),
    (["--lambda_attn", "nan"], "--lambda_attn must be a finite number >= 0"),
    (["--lr_warmup_steps", "-5"], "--lr_warmup_steps must be a finite number >= 0"),
    (["--lora_rank", "-1"], "--lora_rank must be a finite number >= 0"),
    (["--max_train_samples", "0"], "--max_train_samples must be >= 1"),
    (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1"),
    (["--train_batch_size", "0"], "--train_batch_size must be >= 1"),
    (["--max_bad_fraction", "1.5"], r"--max_bad_fraction must be in \[0, 1\]"),
    (["--min_timestep", "500", "--max_timestep", "100"], "need 0 <= --min_timestep <= --max_timestep"),
    (["--column", "image"], "--column takes FIELD=NAME"),
    (["--validation_prompt", "make it blue"], "--validation_image and --validation_prompt go together"),
    (["--mode", "foo"], "invalid choice: 'foo'"),
]


@pytest.mark.parametrize("argv, message", TRAIN_BAD, ids=[" ".join(c[0]) for c in TRAIN_BAD])
def test_training_options_are_refused_by_the_parser(argv, message, capsys):
    import re

    from diffusers_uip2p.training import train_uip2p

    with pytest.raises(SystemExit) as exit_:
        train_uip2p.parse_args(["--pretrained_model_name_or_path", "unused", "--train_data", "unused", "--output_dir",
                                 "unused", *argv])
    assert exit_.value.code == 2 and re.search(message, capsys.readouterr().err)
