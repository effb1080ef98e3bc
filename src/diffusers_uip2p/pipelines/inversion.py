"""Plumbing that every editing pipeline here shares: input checks, images ↔ latents, prompts, inversion.

`DualScheduleInversionMixin` expects the pipeline to have ``vae``, ``unet``, ``scheduler``,
``image_processor`` and ``vae_scale_factor`` (as diffusers' Stable Diffusion pipelines do).
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import torch
from diffusers.utils import logging

from ..schedulers import DualScheduleInversionScheduler, DualScheduleState
from .validation import DEFAULT_MAX_PIXELS, to_unit_pixels

logger = logging.get_logger(__name__)


def as_prompt_list(prompt, name: str = "prompt") -> list[str]:
    """A str or a non-empty list of str, as a list."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise ValueError(f"`{name}` is an empty list; give at least one prompt (\"\" is a valid prompt).")
        return list(prompt)
    raise TypeError(f"`{name}` must be a str or a list of str, got {type(prompt).__name__}.")


def repeat_state(state: DualScheduleState, batch_size: int) -> DualScheduleState:
    """Broadcast a single-image state to ``batch_size`` branches (e.g. source and target prompts)."""
    if state.batch_size == batch_size:
        return state
    if state.batch_size != 1:
        raise ValueError(
            f"`inversion` holds {state.batch_size} images but {batch_size} prompts were given; give one prompt "
            "per inverted image, or invert a single image."
        )
    return DualScheduleState(
        primary=state.primary.expand(batch_size, -1, -1, -1).clone(),
        auxiliary=state.auxiliary.expand(batch_size, -1, -1, -1).clone(),
        timesteps=state.timesteps, model_dtype=state.model_dtype,
    )


class DualScheduleInversionMixin:
    """Shared image/latent conversion and inversion for the editing pipelines."""

    def _inversion_scheduler(self) -> DualScheduleInversionScheduler:
        if not isinstance(self.scheduler, DualScheduleInversionScheduler):
            raise TypeError(
                f"Exact inversion needs a DualScheduleInversionScheduler, but the pipeline's scheduler is "
                f"{type(self.scheduler).__name__}; set `pipe.scheduler = "
                "DualScheduleInversionScheduler.from_config(pipe.scheduler.config)`."
            )
        return self.scheduler

    max_image_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images are refused; None: no limit

    def model_signature(self) -> str:
        """A short digest of what an inversion depends on: the scheduler's and the UNet's configs, and the first
        and last weights of the UNet, VAE and text encoder. An inversion replayed through another pipeline (or
        after a weight change) would return garbage; its signature says so first. Cheap: a few tensors."""
        # Keys with a leading underscore (_diffusers_version, _name_or_path) are bookkeeping that saving adds.
        configs = {name: {key: value for key, value in module.config.items() if not key.startswith("_")}
                   for name, module in (("scheduler", self.scheduler), ("unet", self.unet))}
        digest = hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode())
        for module in (self.unet, self.vae, self.text_encoder):
            parameters = list(module.parameters())
            for tensor in (parameters[0], parameters[-1]):
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def preprocess_images(self, image, name: str = "image") -> torch.Tensor:
        """Any accepted image form (`validation` module) → BCHW float in [-1, 1], sides resized down to
        multiples of ``vae_scale_factor`` with a warning."""
        return to_unit_pixels(image, name, self.vae_scale_factor, self.max_image_pixels) * 2 - 1

    @contextlib.contextmanager
    def _vae_in_float32(self):
        """Run the VAE in float32 when the pipeline is in float16: SD's VAE overflows to NaN in fp16."""
        if self.vae.dtype != torch.float16:
            yield
            return
        self.vae.to(torch.float32)
        try:
            yield
        finally:
            self.vae.to(torch.float16)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """BCHW pixels in [-1, 1] → scaled latents (the posterior mean: deterministic), in float32."""
        with self._vae_in_float32():
            pixels = pixels.to(self.vae.device, self.vae.dtype)
            latents = self.vae.encode(pixels).latent_dist.mode()
        return latents.float() * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → BCHW float32 images in [-1, 1], VAE in float32; never a silent NaN image."""
        with self._vae_in_float32():
            z = latents.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor
            images = self.vae.decode(z, return_dict=False)[0].float()
        if not torch.isfinite(images).all():
            raise FloatingPointError(
                "The decoded image contains NaN or inf; the latents were not finite "
                f"(finite latents: {bool(torch.isfinite(latents).all())}). Try float32 weights or a lower guidance_scale."
            )
        return images

    def decode_latents_to_images(self, latents: torch.Tensor, output_type: str = "pil"):
        """Scaled latents → images in ``output_type`` ("pil", "np", "pt" or "latent")."""
        if output_type == "latent":
            return latents
        return self.image_processor.postprocess(self.decode_latents(latents), output_type=output_type)
