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
    """

    state: DualScheduleState
    latents: torch.Tensor
    vae_reconstruction: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    prompt: list[str]
    negative_prompt: str | list[str] | None
    guidance_scale: float
    num_inference_steps: int


@dataclass
class AutoEditPipelineOutput(BaseOutput):
    """Output of `AutoEditPipeline.__call__`.

    Args:
        images: the reconstructed or edited images.
        latents: their clean latents (scaled), before decoding.
        nsfw_content_detected: per image, if a safety checker ran; otherwise ``None``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor
    nsfw_content_detected: list[bool] | None = None
