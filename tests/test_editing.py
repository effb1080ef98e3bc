"""Editing methods of AutoEditPipeline on exact inversion: P2P, MasaCtrl, SDEdit, direct."""

import pytest
import torch

from diffusers_uip2p import DualScheduleInversionScheduler

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"
METHODS = [("direct", {}), ("p2p", {}), ("p2p", {"p2p_mode": "refine"}), ("p2p", {"equalizer": {"blue": 2.0}}),
           ("p2p", {"local_blend_words": ["red", "blue"]}), ("masactrl", {"masactrl_start_step": 1}),
           ("masactrl", {"masactrl_foreground_words": ["circle", "circle"], "masactrl_start_step": 0}),
           ("sdedit", {"strength": 0.6})]


@pytest.fixture(scope="module")
def pipe(tiny_edit_pipe):
    return tiny_edit_pipe


@pytest.fixture(scope="module")
def inversion(pipe, rgb_image_module):
    return pipe.invert(rgb_image_module, SOURCE, num_inference_steps=8, guidance_scale=4.0)


@pytest.mark.parametrize("method, kwargs", METHODS)
def test_source_branch_is_the_exact_reconstruction(pipe, inversion, method, kwargs):
    out = pipe(TARGET, inversion=inversion, edit_method=method, output_type="latent", source_prompt=SOURCE, **kwargs)
    assert torch.equal(out.source_latents, inversion.latents), method
    assert out.latents.shape == inversion.latents.shape and out.edit_method == method
    assert not torch.equal(out.latents, inversion.latents), "the target prompt should change the image"


@pytest.mark.parametrize("method, kwargs", METHODS)
def test_target_equal_to_source_reconstructs_exactly(pipe, inversion, method, kwargs):
    if "equalizer" in kwargs or "masactrl_foreground_words" in kwargs:
        pytest.skip("reweighting and masked mutual attention change the image even for an equal prompt")
    if "local_blend_words" in kwargs:
        kwargs = {**kwargs, "local_blend_words": ["red", "red"]}
    out = pipe(SOURCE, inversion=inversion, edit_method=method, output_type="latent", **kwargs)
    assert torch.equal(out.latents, inversion.latents), method


def test_image_and_source_prompt_in_one_call(pipe, rgb_image_module, inversion):
    out = pipe(TARGET, image=rgb_image_module, source_prompt=SOURCE, edit_method="p2p", num_inference_steps=8,
               guidance_scale=4.0, output_type="latent")
    again = pipe(TARGET, inversion=inversion, edit_method="p2p", output_type="latent")
    assert torch.equal(out.latents, again.latents) and torch.equal(out.source_latents, inversion.latents)
    assert out.edit_parameters["p2p_mode"] == "replace"


def test_p2p_picks_refine_for_added_words(pipe, inversion):
    out = pipe("a big blue circle on a white background", inversion=inversion, edit_method="p2p",
               output_type="latent")
    assert out.edit_parameters["p2p_mode"] == "refine"
    assert out.edit_parameters["self_replace_min_level"] == 2
    assert out.edit_parameters["refine_padding"] == "follow_end"
    reference = pipe("a big blue circle on a white background", inversion=inversion, edit_method="p2p",
                     refine_padding="same_position", output_type="latent")
    assert reference.edit_parameters["refine_padding"] == "same_position"
    assert not torch.equal(reference.images, out.images)  # the padding tokens read other source tokens
    assert torch.equal(reference.source_latents, out.source_latents)  # the source row is untouched


def test_masactrl_acts_and_a_start_past_the_schedule_is_refused(pipe, inversion):
    """A start step past the last one used to turn MasaCtrl silently into direct editing."""
    direct = pipe(TARGET, inversion=inversion, edit_method="direct", source_prompt=SOURCE, output_type="latent")
    early = pipe(TARGET, inversion=inversion, edit_method="masactrl", masactrl_start_step=0,
                 masactrl_total_layers=None, masactrl_start_layer=0, output_type="latent")
    assert not torch.allclose(direct.latents, early.latents, atol=1e-3)
    with pytest.raises(ValueError, match=r"`masactrl_start_step` must be in \[0, 8\).*got 100: MasaCtrl would never act"):
        pipe(TARGET, inversion=inversion, edit_method="masactrl", masactrl_start_step=100, output_type="latent")


def test_attention_maps_are_returned_per_target_token(pipe, inversion):
    out = pipe(TARGET, inversion=inversion, edit_method="p2p", output_type="latent", return_attention_maps=True)
    (maps,) = out.attention_maps
    assert [token for token, _ in maps][:3] == ["a", "blue", "circle"] or len(maps) >= 3
    assert all(m.ndim == 2 for _, m in maps)


def test_sdedit_strength_shortens_the_schedule():
    scheduler = DualScheduleInversionScheduler()
    scheduler.set_timesteps(50, strength=0.5)
    assert scheduler.primary_timesteps.tolist() == list(range(481, 0, -20))
    assert len(scheduler.timesteps) == 2 * 25 - 3
    with pytest.raises(ValueError, match="strength must be in"):
        scheduler.set_timesteps(50, strength=0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"edit_method": "prompt2prompt"}, "`edit_method` must be one of direct, p2p, masactrl, sdedit"),
        ({"edit_method": "p2p", "p2p_mode": "replace", "prompt": "a blue circle"},
         "different word counts"),
        ({"edit_method": "p2p", "local_blend_words": ["red", "green"]}, "green"),
        ({"edit_method": "masactrl", "masactrl_start_layer": 40, "masactrl_total_layers": None}, "start_layer"),
        ({"edit_method": "p2p", "inversion": None}, "edits a real image"),
        ({"edit_method": "sdedit", "strength": 1.5}, "strength"),
    ],
)
def test_bad_editing_input(pipe, inversion, kwargs, match):
    kwargs = {"prompt": TARGET, "inversion": inversion, "output_type": "latent", **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


@pytest.mark.parametrize("method, kwargs", METHODS[:2] + METHODS[4:6] + METHODS[-1:])
def test_ddim_baseline_runs_every_method_with_the_same_budget(pipe, inversion, method, kwargs):
    from diffusers_uip2p.evaluation import ddim_steps_for_same_budget
    from diffusers_uip2p.evaluation.edit_baselines import baseline_edit

    steps = ddim_steps_for_same_budget(8)
    source, target, calls = baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], steps, 4.0, method, **kwargs)
    assert target.shape == inversion.latents.shape
    assert not torch.equal(source, inversion.latents), "DDIM inversion is not exact"
    expected = 2 * steps if method != "sdedit" else 2 * round(kwargs["strength"] * steps)
    assert calls == expected
