"""Proposition 1 in practice: sample(invert(z)) == z on a random UNet with CFG 7.5.

Batch 2 with different prompts, every prediction type, step count and auxiliary position.
"""

import copy

import pytest
import torch

from diffusers_uip2p import DualScheduleInversionScheduler
from diffusers_uip2p.evaluation import CountingModelFn, ddim_round_trip, ddim_steps_for_same_budget, relative_error
from diffusers_uip2p.testing import SD15_SCHEDULER_CONFIG, tiny_text_to_image_components

GUIDANCE = 7.5
BOUND = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def model():
    """Tiny UNet and embeddings of two different prompts plus the empty prompt."""
    c = tiny_text_to_image_components()
    tokenize = lambda p: c["tokenizer"](p, padding="max_length", max_length=77, return_tensors="pt").input_ids  # noqa: E731
    with torch.no_grad():
        cond = c["text_encoder"](tokenize(["a red circle", "a blue square on a yellow background"]))[0]
        uncond = c["text_encoder"](tokenize(["", ""]))[0]
    return c["unet"], torch.cat([uncond, cond])


def guided(unet, embeds, dtype):
    unet = copy.deepcopy(unet).to(dtype) if unet.dtype != dtype else unet
    embeds = embeds.to(dtype)

    @torch.no_grad()
    def model_fn(x, t):
        uncond, cond = unet(torch.cat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
        return uncond + GUIDANCE * (cond - uncond)

    return model_fn


@pytest.fixture(scope="module")
def model_fns(model):
    unet, embeds = model
    return {dtype: guided(unet, embeds, dtype) for dtype in (torch.float32, torch.float64)}


def latents(dtype):
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("position", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("steps", [20, 50])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_reconstruction_is_exact(model_fns, dtype, prediction_type, steps, position):
    s = DualScheduleInversionScheduler.from_config(
        SD15_SCHEDULER_CONFIG, prediction_type=prediction_type, auxiliary_position=position
    )
    s.set_timesteps(steps)
    z0 = latents(dtype)
    counted = CountingModelFn(model_fns[dtype])
    state = s.invert(z0, counted)
    assert counted.calls == 2 * steps - 2
    assert state.primary.dtype == torch.float64 and state.primary.shape == z0.shape
    assert not torch.allclose(state.primary, z0.double(), atol=0.1), "the state must actually be noised"
    reconstruction = s.sample(state, counted)
    assert counted.calls == (2 * steps - 2) + (2 * steps - 3)
    assert reconstruction.dtype == dtype
    assert relative_error(reconstruction, z0) <= BOUND[dtype]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_ddim_inversion_is_at_least_1000x_worse(model_fns, dtype, prediction_type):
    s = DualScheduleInversionScheduler.from_config(SD15_SCHEDULER_CONFIG, prediction_type=prediction_type)
    s.set_timesteps(50)
    z0, model_fn = latents(dtype), model_fns[dtype]
    dsi_error = relative_error(s.sample(s.invert(z0, model_fn), model_fn), z0)
    ddim, calls = ddim_round_trip(s.config, z0, model_fn, ddim_steps_for_same_budget(50))
    assert calls == 196  # DSI: 98 + 97 calls
    ddim_error = relative_error(ddim, z0)
    assert ddim_error > 0 and ddim_error >= 1000 * dsi_error, (ddim_error, dsi_error)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_model_is_exact_too(model, dtype):
    """The float64 carry gives the model bitwise-identical inputs in both directions, whatever its dtype."""
    unet, embeds = model
    model_fn = guided(unet, embeds, dtype)
    s = DualScheduleInversionScheduler.from_config(SD15_SCHEDULER_CONFIG)
    s.set_timesteps(20)
    z0 = latents(dtype)
    reconstruction = s.sample(s.invert(z0, model_fn), model_fn)
    assert torch.isfinite(reconstruction).all()
    assert torch.equal(reconstruction, z0)
