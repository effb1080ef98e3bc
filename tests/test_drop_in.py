"""The scheduler inside stock diffusers pipelines: generation from noise, seeding from an inversion,
the live dual state, and the errors of misuse."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffusers_uip2p import AutoEditPipeline, DualScheduleInversionScheduler, DualScheduleState
from diffusers_uip2p.testing import tiny_text_to_image_components


@pytest.fixture
def sd_pipe():
    pipe = StableDiffusionPipeline(**tiny_text_to_image_components(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_stable_diffusion_pipeline_generates_finite_images(sd_pipe):
    assert isinstance(sd_pipe.scheduler, DualScheduleInversionScheduler)
    images = sd_pipe("a red circle", num_inference_steps=10, height=16, width=16, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    assert images.std() > 0.01


def test_stock_pipeline_reconstructs_from_a_seeded_state(sd_pipe, rgb_image):
    """`scheduler.begin(state)` survives the pipeline's own set_timesteps and gives exact reconstruction."""
    editor = AutoEditPipeline.from_pipe(sd_pipe)
    inversion = editor.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    out = sd_pipe("a red circle", latents=sd_pipe.scheduler.begin(inversion.state), num_inference_steps=10,
                  guidance_scale=inversion.guidance_scale, output_type="latent")
    assert torch.equal(out.images, inversion.latents)


def test_seeded_state_with_another_step_count_is_refused(sd_pipe, rgb_image):
    editor = AutoEditPipeline.from_pipe(sd_pipe)
    inversion = editor.invert(rgb_image, "a red circle", num_inference_steps=10, output_type="np")
    latents = sd_pipe.scheduler.begin(inversion.state)
    with pytest.raises(ValueError, match="another schedule"):
        sd_pipe("a red circle", latents=latents, num_inference_steps=12, output_type="latent")


def test_live_state_is_readable_and_editable_between_steps(rgb_image):
    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    inversion = pipe.invert([rgb_image] * 2, ["a red circle"] * 2, num_inference_steps=8, output_type="np")
    seen = []

    def read_both(pipeline, i, t, kwargs):
        state = pipeline.scheduler.state
        seen.append((state.primary.shape, state.auxiliary.shape))
        return {}

    pipe(["a red circle", "a blue circle"], inversion=inversion, callback_on_step_end=read_both, output_type="latent")
    assert len(seen) == len(pipe.scheduler.timesteps) and all(p == a == (2, 4, 8, 8) for p, a in seen)

    def blend_target_into_source(pipeline, i, t, kwargs):
        state = pipeline.scheduler.state  # LocalBlend-style: edit both carried latents in place
        for latent in (state.primary, state.auxiliary):
            latent[1] = latent[0]
        return {}

    def unet_inputs_during(callback):
        inputs = []
        hook = pipe.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
        pipe(["a red circle", "a blue circle"], inversion=inversion, callback_on_step_end=callback,
             output_type="latent")
        hook.remove()
        return inputs

    plain = unet_inputs_during(None)
    assert not all(torch.equal(x[0], x[1]) for x in plain[1:]), "unblended, the two prompts diverge"
    blended = unet_inputs_during(blend_target_into_source)
    assert all(torch.equal(x[0], x[1]) for x in blended[1:]), "after the edit the model sees the edited latents"


def test_callback_latents_replace_the_carried_latent(rgb_image):
    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    inversion = pipe.invert(rgb_image, "a red circle", num_inference_steps=6, output_type="np")
    plain = pipe("a red circle", inversion=inversion, output_type="latent").latents
    nudged = pipe("a red circle", inversion=inversion, output_type="latent",
                  callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"] + (0.5 if i == 0 else 0.0)}).latents
    assert not torch.allclose(plain, nudged)


def test_sample_errors_name_the_problem():
    s = DualScheduleInversionScheduler()
    s.set_timesteps(10)
    model_fn = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(TypeError, match="call `invert` first"):
        s.sample(None, model_fn)
    state = s.invert(torch.randn(1, 4, 8, 8), model_fn)
    bad = DualScheduleState(primary=state.primary, auxiliary=state.auxiliary[:, :, :4], timesteps=state.timesteps,
                            model_dtype=torch.float32)
    with pytest.raises(ValueError, match="same shape"):
        s.sample(bad, model_fn)
    s.set_timesteps(12)
    with pytest.raises(ValueError, match="another schedule"):
        s.sample(state, model_fn)


def test_step_refuses_a_sample_of_another_shape():
    s = DualScheduleInversionScheduler()
    s.set_timesteps(10)
    state = s.invert(torch.randn(1, 4, 8, 8), lambda x, t: torch.zeros_like(x))
    s.begin(state)
    t = s.timesteps[0]
    s.step(torch.zeros(1, 4, 8, 8), t, state.model_input())
    with pytest.raises(ValueError, match="sample has shape"):
        s.step(torch.zeros(2, 4, 8, 8), s.timesteps[1], torch.zeros(2, 4, 8, 8))


def test_invert_rejects_non_4d_latents():
    s = DualScheduleInversionScheduler()
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="latents must be a 4-D tensor"):
        s.invert(torch.randn(4, 8, 8), lambda x, t: x)


def test_generation_from_noise_walks_one_ddim_chain():
    """Without an inverted state, the loop is a plain DDIM chain over the interleaved timesteps: the dual
    updates would remove each chain's noise with the other chain's estimate."""
    scheduler = DualScheduleInversionScheduler()
    scheduler.set_timesteps(6)
    model = lambda x, t: 0.3 * x + 0.01 * t / 1000  # noqa: E731  any deterministic function of (x, t)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected, sample = x.clone(), x.clone()
    order = scheduler.timesteps.tolist()
    alphas = scheduler.alphas_cumprod
    for i, t in enumerate(order):
        eps = model(expected, t)
        a_t = alphas[t]
        a_next = alphas[order[i + 1]] if i + 1 < len(order) else scheduler.clean_alpha_cumprod
        x0 = (expected - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        expected = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        sample = scheduler.step(model(sample, t), t, sample).prev_sample
        assert torch.equal(scheduler.state.primary, scheduler.state.auxiliary)
    assert torch.allclose(sample, expected, atol=1e-10)
