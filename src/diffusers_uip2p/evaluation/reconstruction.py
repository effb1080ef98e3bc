"""Reconstruction round trips (invert, then sample with the same prompt) and their error measures.

Used by the tests, the inversion benchmark and the CLI to compare Dual-Schedule Inversion with the
DDIM inversion that diffusers users would otherwise pick (`DDIMInverseScheduler` + `DDIMScheduler`).
"""

from __future__ import annotations

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from ..checks import check_finite, check_number
from ..schedulers import DualScheduleInversionScheduler, scheduler_from_config
from ..schedulers.scheduling_dual_schedule import ModelFn
from .pixel_metrics import psnr as psnr_per_image


class CountingModelFn:
    """Wraps a ``model_fn`` and counts its calls, so that budgets can be compared, not assumed."""

    def __init__(self, model_fn: ModelFn):
        self.model_fn, self.calls = model_fn, 0

    def __call__(self, sample, timestep):
        self.calls += 1
        return self.model_fn(sample, timestep)


def dsi_round_trip(scheduler: DualScheduleInversionScheduler, latents: torch.Tensor, model_fn: ModelFn,
                   num_inference_steps: int) -> tuple[torch.Tensor, int]:
    """Invert and sample back with Dual-Schedule Inversion; returns (reconstruction, UNet calls)."""
    counted = CountingModelFn(model_fn)
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    reconstruction = scheduler.sample(scheduler.invert(latents, counted), counted)
    return reconstruction, counted.calls


def ddim_steps_for_same_budget(num_inference_steps: int) -> int:
    """DDIM steps whose inversion uses as many UNet calls as DSI's with ``num_inference_steps`` (2N − 2);
    the paper compares 50 DSI steps with about 100 DDIM steps the same way (§5.1)."""
    check_number(num_inference_steps, "num_inference_steps", low=2, integer=True)  # 1 DSI step: 0 DDIM steps
    return 2 * num_inference_steps - 2


def ddim_round_trip(config, latents: torch.Tensor, model_fn: ModelFn, num_inference_steps: int,
                    progress_bar=None) -> tuple[torch.Tensor, int]:
    """Invert with diffusers' `DDIMInverseScheduler` and sample back with `DDIMScheduler`, both built from
    ``config`` (any SD scheduler config); returns (reconstruction, UNet calls). ``progress_bar``: an optional
    callable wrapping an iterable (a pipeline's ``progress_bar``), one bar per direction."""
    counted = CountingModelFn(model_fn)
    inverse = scheduler_from_config(DDIMInverseScheduler, config)
    inverse.set_timesteps(num_inference_steps, device=latents.device)
    x = latents
    for t in progress_bar(inverse.timesteps) if progress_bar else inverse.timesteps:
        x = inverse.step(counted(x, t), t, x).prev_sample
    forward = scheduler_from_config(DDIMScheduler, config)
    forward.set_timesteps(num_inference_steps, device=latents.device)
    for t in progress_bar(forward.timesteps) if progress_bar else forward.timesteps:
        x = forward.step(counted(x, t), t, x).prev_sample
    return x, counted.calls


def relative_error(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    """‖x̂ − x‖ / ‖x‖ over the whole batch, in float64."""
    if reconstruction.shape != reference.shape:
        raise ValueError(f"`reconstruction` and `reference` must have the same shape, got "
                         f"{tuple(reconstruction.shape)} and {tuple(reference.shape)}.")
    check_finite(reconstruction, "reconstruction")
    check_finite(reference, "reference")
    if not reference.any():
        raise ValueError("`reference` is all zeros: an error relative to it is undefined.")
    reference = reference.double()
    return ((reconstruction.double() - reference).norm() / reference.norm()).item()


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean PSNR in dB of images against references (both BCHW in [0, data_range]); inf when identical."""
    return psnr_per_image(images, reference, data_range).mean().item()
