"""AutoEditPipeline: invert → reconstruct exactly, edit directly, save/load, and clear errors."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline

from diffusers_uip2p import AutoEditPipeline, DualScheduleInversionOutput, DualScheduleInversionScheduler
from diffusers_uip2p.testing import SD15_SCHEDULER_CONFIG, tiny_text_to_image_components


@pytest.fixture
def pipe():
    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance_scale", [1.0, 7.5])
def test_same_prompt_returns_the_inverted_latents_and_the_vae_round_trip(pipe, rgb_image, guidance_scale):
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=20, guidance_scale=guidance_scale,
                            output_type="np")
    assert isinstance(inversion, DualScheduleInversionOutput)
    out = pipe("a red circle", inversion=inversion, output_type="np")
    assert torch.equal(out.latents, inversion.latents)
    np.testing.assert_array_equal(out.images, inversion.vae_reconstruction)
    assert out.images.shape == (1, 16, 16, 3)


def test_another_prompt_edits(pipe, rgb_image):
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    edit = pipe("a blue square", inversion=inversion, output_type="np").images
    assert np.isfinite(edit).all()
    assert np.abs(edit - inversion.vae_reconstruction).max() > 1e-3


def test_batch_of_images_with_their_own_prompts(pipe, rgb_image):
    other = PIL.Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    prompts = ["a red circle", "a grey square"]
    inversion = pipe.invert([rgb_image, other], prompts, num_inference_steps=10, output_type="pt")
    assert inversion.state.batch_size == 2
    out = pipe(prompts, inversion=inversion, output_type="pt")
    assert torch.equal(out.latents, inversion.latents)


def test_one_inversion_several_branches(pipe, rgb_image):
    """[source, target] from one inverted image: one branch per prompt, same start."""
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    out = pipe(["a red circle", "a blue circle"], inversion=inversion, output_type="np")
    assert out.images.shape == (2, 16, 16, 3)
    # Exactness needs bitwise-equal model evaluations; a batch of 2 instead of 1 changes kernel rounding,
    # so the source branch is close to, not equal to, the reconstruction.
    assert np.abs(out.images[0] - inversion.vae_reconstruction[0]).max() < 0.1


def test_inverting_in_the_sampling_layout_keeps_the_source_branch_exact(pipe, rgb_image):
    """Kernel rounding depends on the batch shape, not on the other elements: invert [image, image] with
    [source, source] and a [source, target] edit reconstructs its source branch bit for bit."""
    source = "a red circle"
    inversion = pipe.invert([rgb_image, rgb_image], [source, source], num_inference_steps=50, output_type="np")
    out = pipe([source, "a blue square"], inversion=inversion, output_type="np")
    assert torch.equal(out.latents[0], inversion.latents[0])
    assert not torch.equal(out.latents[1], inversion.latents[1])


def test_defaults_come_from_the_inversion(pipe, rgb_image):
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=7, guidance_scale=3.0,
                            negative_prompt="blurry", output_type="np")
    out = pipe("a red circle", inversion=inversion, output_type="latent")
    assert torch.equal(out.latents, inversion.latents)
    changed = pipe("a red circle", inversion=inversion, guidance_scale=5.0, output_type="latent")
    assert not torch.equal(changed.latents, inversion.latents)


def test_generation_from_noise(pipe):
    images = pipe("a red circle", num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_generation_size_must_fit_the_vae(pipe):
    with pytest.raises(ValueError, match="`height` must be a positive multiple of 2, got 15"):
        pipe("a red circle", num_inference_steps=3, height=15, width=16)


def test_foreign_scheduler_is_converted(rgb_image):
    components = tiny_text_to_image_components()
    components["scheduler"] = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    pipe = AutoEditPipeline(**components)
    assert isinstance(pipe.scheduler, DualScheduleInversionScheduler)
    pipe.scheduler.set_timesteps(50)
    assert pipe.scheduler.primary_timesteps[0] == 981


def test_a_pipeline_without_a_dual_schedule_scheduler_cannot_invert(pipe, rgb_image):
    pipe.scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    with pytest.raises(TypeError, match="DualScheduleInversionScheduler"):
        pipe.invert(rgb_image, "a red circle")


def test_save_and_load(pipe, rgb_image, tmp_path):
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "AutoEditPipeline"
    assert index["scheduler"] == ["diffusers_uip2p.schedulers.scheduling_dual_schedule", "DualScheduleInversionScheduler"]
    assert index["safety_checker"] == [None, None]
    loaded = AutoEditPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DualScheduleInversionScheduler) and loaded.safety_checker is None
    again = loaded.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    torch.testing.assert_close(again.state.primary, inversion.state.primary)
    # A Stable Diffusion folder that uses the scheduler loads it back, too.
    sd = StableDiffusionPipeline.from_pipe(loaded, requires_safety_checker=False)  # drops the routing components
    sd.save_pretrained(tmp_path / "sd")
    assert isinstance(StableDiffusionPipeline.from_pretrained(tmp_path / "sd").scheduler, DualScheduleInversionScheduler)


def test_fp16_model_keeps_the_vae_in_float32(pipe, rgb_image):
    pipe.to(torch.float16)
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=5, output_type="np")
    assert pipe.vae.dtype == torch.float16, "the VAE goes back to the pipeline's dtype"
    assert inversion.latents.dtype == torch.float16
    out = pipe("a red circle", inversion=inversion, output_type="np")
    assert torch.equal(out.latents, inversion.latents)
    assert np.isfinite(out.images).all()


def test_nan_latents_raise_instead_of_a_silent_nan_image(pipe):
    with pytest.raises(FloatingPointError, match="NaN"):
        pipe.decode_latents_to_images(torch.full((1, 4, 8, 8), float("nan")), "np")


def test_image_size_not_a_multiple_of_the_vae_factor_is_resized(pipe):
    odd = PIL.Image.fromarray(np.zeros((17, 19, 3), np.uint8))
    inversion = pipe.invert(odd, "a black square", num_inference_steps=3, output_type="np")
    assert inversion.vae_reconstruction.shape == (1, 16, 18, 3)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((16, 16), np.uint8), ValueError, "`image` is a numpy uint8 array of shape \\(16, 16\\); expected"),
        (torch.zeros(1, 4, 16, 16), ValueError, "with 4 channels; expected 1 \\(grey\\) or 3 \\(RGB\\)"),
        ("cat.png", TypeError, "`image` is a str; expected PIL images"),
        ([], ValueError, "`image` is an empty list"),
    ],
)
def test_bad_images(pipe, image, error, match):
    with pytest.raises(error, match=match):
        pipe.invert(image, "a cat", num_inference_steps=3)


@pytest.mark.parametrize(
    "prompt, error, match",
    [([], ValueError, "`prompt` is an empty list"), (3, TypeError, "`prompt` must be a str"),
     (["a", "b", "c"], ValueError, "1 images in `image` but 3 prompts")],
)
def test_bad_prompts_for_invert(pipe, rgb_image, prompt, error, match):
    with pytest.raises(error, match=match):
        pipe.invert(rgb_image, prompt, num_inference_steps=3)


def test_bad_call_arguments(pipe, rgb_image):
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=5, output_type="np")
    with pytest.raises(ValueError, match="`prompt` is an empty list"):
        pipe([], inversion=inversion)
    with pytest.raises(ValueError, match="exactly one of `prompt` and `prompt_embeds`"):
        pipe(inversion=inversion)
    with pytest.raises(TypeError, match="`inversion` must be the output of `pipe.invert"):
        pipe("a cat", inversion=inversion.state)
    with pytest.raises(ValueError, match="num_inference_steps=8 differs"):
        pipe("a cat", inversion=inversion, num_inference_steps=8)
    with pytest.raises(ValueError, match="`inversion` holds 3 images but 2 prompts"):
        pipe(["a", "b"], inversion=pipe.invert([rgb_image] * 3, "x", num_inference_steps=3))
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe("a cat", inversion=inversion, callback_on_step_end_tensor_inputs=["noise"])
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe.invert(rgb_image, "a cat", num_inference_steps=1)
