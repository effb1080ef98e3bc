"""The same editing methods on DDIM inversion: the baseline the DSI paper compares against (Tables 3, 5).

`ddim_edit` inverts with diffusers' `DDIMInverseScheduler` and samples with `DDIMScheduler`, with the
controllers `AutoEditPipeline` would use, in the same batch layout ([source, targets...]) and with the same
passthrough processors during inversion. Only the inversion differs, so a comparison isolates it. Give DDIM
``ddim_steps_for_same_budget(N)`` steps to match DSI's N in UNet calls.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from ..attention import attention_control
from ..pipelines.editing import plan_edit
from .reconstruction import CountingModelFn, ddim_scheduler


@torch.no_grad()
def ddim_edit(pipe, clean_latents: torch.Tensor, prompts: list[str], num_inference_steps: int,
              guidance_scale: float = 7.5, edit_method: str = "direct", negative_prompt=None,
              **method_kwargs) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Edit one image's clean latents ``[1, C, H, W]`` from ``prompts[0]`` (source) to ``prompts[1:]``.

    Returns (source branch latents [1, ...], target latents [T, ...], UNet calls)."""
    if clean_latents.ndim != 4 or clean_latents.shape[0] != 1:
        raise ValueError(f"`clean_latents` must be one image's latents [1, C, H, W], got {tuple(clean_latents.shape)}.")
    plan = plan_edit(edit_method, prompts, pipe.tokenizer, **method_kwargs)
    inverse = ddim_scheduler(DDIMInverseScheduler, pipe.scheduler.config)
    forward = ddim_scheduler(DDIMScheduler, pipe.scheduler.config)
    device = clean_latents.device
    inverse.set_timesteps(num_inference_steps, device=device)
    forward.set_timesteps(num_inference_steps, device=device)
    steps = max(1, round(plan.strength * num_inference_steps))  # SDEdit: only the lowest noise levels
    controller = plan.controller

    source_fn = CountingModelFn(pipe.guided_model_fn([prompts[0]] * len(prompts), guidance_scale, negative_prompt))
    x = clean_latents.expand(len(prompts), -1, -1, -1).contiguous()
    with attention_control(pipe.unet, controller.passthrough()) if controller else nullcontext():
        for t in inverse.timesteps[:steps]:
            x = inverse.step(source_fn(x, t), t, x).prev_sample

    edit_fn = CountingModelFn(pipe.guided_model_fn(prompts, guidance_scale, negative_prompt))
    if controller is not None:
        controller.configure(len(prompts), guidance_scale > 1.0)
    with attention_control(pipe.unet, controller) if controller else nullcontext():
        for i, t in enumerate(forward.timesteps[-steps:]):
            if controller is not None:
                controller.set_step(i, steps)
            x = forward.step(edit_fn(x, t), t, x).prev_sample
            if plan.local_blend is not None:
                x = plan.local_blend(x, i)
    return x[:1], x[1:], source_fn.calls + edit_fn.calls
