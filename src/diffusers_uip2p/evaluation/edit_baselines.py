"""The same editing methods on the inversions DSI is compared with (DSI paper, Tables 1–3 and 5).

`baseline_edit` runs the controllers `AutoEditPipeline` would use, in the same batch layout ([source,
targets...]) and with the same passthrough processors during inversion, on one of three inversions:

* ``"ddim"``: diffusers' `DDIMInverseScheduler`, then `DDIMScheduler` (the DSI paper's baseline);
* ``"direct_inversion"``: Direct Inversion (Ju et al. 2023, "PnP Inversion"): DDIM inversion, and while
  editing the *source row only* is put back onto the stored inversion trajectory after every step, so the
  source branch reconstructs exactly and feeds the targets its attention from the right latents;
* ``"null_text"``: null-text inversion (Mokady et al. 2023): DDIM inversion without guidance gives the
  pivot trajectory, then per step the unconditional embedding is optimised (Adam) until the guided DDIM
  step lands on the pivot; editing uses those per-step embeddings for every row.

Only the inversion differs from the DSI pipeline, so a comparison isolates it. Give DDIM
``ddim_steps_for_same_budget(N)`` steps to match DSI's N in UNet calls (null-text costs more: its calls,
optimisation included, are returned).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from ..attention import attention_control
from ..pipelines.editing import plan_edit
from ..schedulers import scheduler_from_config
from .reconstruction import CountingModelFn

INVERSIONS = ("ddim", "direct_inversion", "null_text")


@torch.no_grad()
def baseline_edit(pipe, clean_latents: torch.Tensor, prompts: list[str], num_inference_steps: int,
                  guidance_scale: float = 7.5, edit_method: str = "direct", negative_prompt=None,
                  inversion: str = "ddim", null_text_iterations: int = 10, **method_kwargs
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Edit one image's clean latents ``[1, C, H, W]`` from ``prompts[0]`` (source) to ``prompts[1:]``.

    Returns (source branch latents [1, ...], target latents [T, ...], UNet calls)."""
    if clean_latents.ndim != 4 or clean_latents.shape[0] != 1:
        raise ValueError(f"`clean_latents` must be one image's latents [1, C, H, W], got {tuple(clean_latents.shape)}.")
    if inversion not in INVERSIONS:
        raise ValueError(f"`inversion` must be one of {', '.join(INVERSIONS)}, got {inversion!r}.")
    if inversion == "null_text" and guidance_scale <= 1.0:
        raise ValueError(f"null-text inversion optimises the unconditional embedding of guidance; it needs "
                         f"`guidance_scale` > 1, got {guidance_scale}.")
    plan = plan_edit(edit_method, prompts, pipe.tokenizer, **method_kwargs)
    inverse = scheduler_from_config(DDIMInverseScheduler, pipe.scheduler.config)
    forward = scheduler_from_config(DDIMScheduler, pipe.scheduler.config)
    device = clean_latents.device
    inverse.set_timesteps(num_inference_steps, device=device)
    forward.set_timesteps(num_inference_steps, device=device)
    steps = max(1, round(plan.strength * num_inference_steps))  # SDEdit: only the lowest noise levels
    controller = plan.controller

    # Null-text inverts without guidance (its pivot); the others with the guidance they sample with.
    inversion_scale = 1.0 if inversion == "null_text" else guidance_scale
    source_fn = CountingModelFn(pipe.guided_model_fn([prompts[0]] * len(prompts), inversion_scale, negative_prompt))
    x = clean_latents.expand(len(prompts), -1, -1, -1).contiguous()
    trajectory = [x]  # x at the clean end, then after each inversion step
    with attention_control(pipe.unet, controller.passthrough()) if controller else nullcontext():
        for t in inverse.timesteps[:steps]:
            x = inverse.step(source_fn(x, t), t, x).prev_sample
            trajectory.append(x)
    calls = source_fn.calls
    timesteps = forward.timesteps[-steps:]

    null_embeds = None
    if inversion == "null_text":
        null_embeds, optimisation_calls = optimise_null_text(pipe, forward, trajectory, timesteps, prompts[0],
                                                             guidance_scale, negative_prompt, null_text_iterations)
        calls += optimisation_calls

    prompt_embeds, negative_embeds = pipe._encode_prompts(prompts, negative_prompt, None, None, guidance_scale)
    if controller is not None:
        controller.configure(len(prompts), guidance_scale > 1.0)
    edit_calls = 0
    with attention_control(pipe.unet, controller) if controller else nullcontext():
        for i, t in enumerate(timesteps):
            if controller is not None:
                controller.set_step(i, steps)
            uncond = negative_embeds if null_embeds is None else null_embeds[i].expand_as(negative_embeds)
            x = forward.step(pipe._model_fn(prompt_embeds, uncond, guidance_scale)(x, t), t, x).prev_sample
            edit_calls += 1
            if plan.local_blend is not None:
                x = plan.local_blend(x, i)
            if inversion == "direct_inversion":  # the source row back onto the inversion trajectory
                x = torch.cat([trajectory[steps - 1 - i][:1], x[1:]])
    return x[:1], x[1:], calls + edit_calls


@torch.enable_grad()
def optimise_null_text(pipe, forward, trajectory, timesteps, source_prompt: str, guidance_scale: float,
                       negative_prompt, iterations: int, learning_rate: float = 1e-2):
    """Per sampling step, the unconditional embedding that makes the guided DDIM step from the current latent
    land on the pivot trajectory (Mokady et al., Alg. 1: Adam, lr 1e-2, early stop at 1e-5 + 2e-5·i).
    Returns (one embedding [1, L, D] per step, UNet calls)."""
    cond, uncond = pipe._encode_prompts([source_prompt], negative_prompt, None, None, 2.0)
    null = uncond.detach().clone()
    frozen = [p for p in pipe.unet.parameters() if p.requires_grad]
    for parameter in frozen:  # gradients for the embedding only
        parameter.requires_grad_(False)
    try:
        return _optimise(pipe, forward, trajectory, timesteps, cond, null, guidance_scale, iterations, learning_rate)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def _optimise(pipe, forward, trajectory, timesteps, cond, null, guidance_scale, iterations, learning_rate):
    latent, calls, embeddings = trajectory[-1][:1].detach(), 0, []
    for i, t in enumerate(timesteps):
        target = trajectory[len(timesteps) - 1 - i][:1].detach()
        with torch.no_grad():
            eps_cond = pipe.unet(latent, t, encoder_hidden_states=cond, return_dict=False)[0]
        calls += 1
        null = null.detach().requires_grad_(True)
        optimiser = torch.optim.Adam([null], lr=learning_rate * (1.0 - i / 100.0))
        for _ in range(iterations):
            eps_uncond = pipe.unet(latent, t, encoder_hidden_states=null, return_dict=False)[0]
            calls += 1
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            loss = torch.nn.functional.mse_loss(forward.step(eps, t, latent).prev_sample, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if loss.item() < 1e-5 + 2e-5 * i:
                break
        null = null.detach()
        embeddings.append(null)
        with torch.no_grad():
            eps_uncond = pipe.unet(latent, t, encoder_hidden_states=null, return_dict=False)[0]
            latent = forward.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, latent).prev_sample
        calls += 1
    return embeddings, calls
