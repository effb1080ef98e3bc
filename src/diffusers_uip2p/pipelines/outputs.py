"""Output dataclasses of the pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from ..schedulers import DualScheduleState


@dataclass
class DualScheduleInversionOutput(BaseOutput):
    """What ``pipe.invert(image, prompt)`` returns; pass it back as ``pipe(prompt, inversion=...)``.

    Args:
        state: the dual noisy state (primary and auxiliary latents, float64).
        latents: the image's clean latents exactly as they were inverted (scaled, in the UNet's dtype).
        vae_reconstruction: those latents decoded: the best any latent-space inversion can return, and
            what a same-prompt reconstruction returns.
        prompt: the source prompts used for inversion.
        negative_prompt: the negative prompts used for inversion, or ``None``.
        guidance_scale: classifier-free guidance scale used for inversion.
        num_inference_steps: number of primary steps used for inversion.
        model_signature: the inverting pipeline's `model_signature()`; sampling checks it.
    """

    state: DualScheduleState
    latents: torch.Tensor
    vae_reconstruction: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    prompt: list[str]
    negative_prompt: str | list[str] | None
    guidance_scale: float
    num_inference_steps: int
    model_signature: str | None = None


@dataclass
class AutoEditPipelineOutput(BaseOutput):
    """Output of `AutoEditPipeline.__call__`.

    Args:
        images: the reconstructed or edited images (one per target prompt).
        latents: their clean latents (scaled), before decoding.
        nsfw_content_detected: per image, if a safety checker ran; otherwise ``None``.
        source_latents: when editing, the source branch's clean latents: equal, bit for bit, to the inverted
            image's latents (the exact reconstruction). ``None`` otherwise.
        edit_method: the method used ("direct", "p2p", "masactrl" or "sdedit"; with "auto", the one chosen).
        edit_parameters: the method's parameters as used (e.g. the P2P mode it chose), with the
            ``target_rule`` when sampling from an inversion.
        attention_maps: with ``return_attention_maps=True``, per target prompt, a list of
            (token, [h, w] cross-attention map) pairs; draw them with `diffusers_uip2p.attention.draw_token_maps`.
        source_prompt: when editing, the source prompt used (the captioner's, if it wrote one).
        edit_task: with ``edit_method="auto"``, the task decided (one of `diffusers_uip2p.classifier.EDIT_TASKS`).
        task_probabilities: the task classifier's probability for each task, if a classifier decided.
        task_rule: the word rule that decided the task, if no classifier was loaded.
        sync_gap: when sampling from an inversion, ``[model evaluations, images]``: per step and image, how far
            the dual latents drifted apart (`DualScheduleSchedulerOutput.sync_gap`); it grows under the coupled
            rule on an edit.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    source_latents: torch.Tensor | None = None
    edit_method: str = "direct"
    edit_parameters: dict | None = None
    attention_maps: list | None = None
    source_prompt: str | None = None
    edit_task: str | None = None
    task_probabilities: dict[str, float] | None = None
    task_rule: str | None = None
    sync_gap: torch.Tensor | None = None
