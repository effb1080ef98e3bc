"""Plumbing that every editing pipeline here shares: input checks, images ↔ latents, prompts, inversion.

`DualScheduleInversionMixin` expects the pipeline to have ``vae``, ``unet``, ``scheduler``,
``image_processor`` and ``vae_scale_factor`` (as diffusers' Stable Diffusion pipelines do).
"""

from __future__ import annotations

import contextlib

import numpy as np
import PIL.Image
import torch
from diffusers.utils import logging

from ..schedulers import DualScheduleInversionScheduler, DualScheduleState

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

    def preprocess_images(self, image, name: str = "image") -> torch.Tensor:
        """PIL image(s), HWC arrays in [0, 1] or uint8, or BCHW tensors in [-1, 1] → BCHW float in [-1, 1].

        Images must be RGB. A side that is not a multiple of ``vae_scale_factor`` is resized down to one,
        with a warning.
        """
        images = image if isinstance(image, list) else [image]
        if not images:
            raise ValueError(f"`{name}` is an empty list; give at least one image.")
        for i, img in enumerate(images):
            where = f"`{name}`" + (f"[{i}]" if isinstance(image, list) else "")
            if isinstance(img, PIL.Image.Image):
                if img.mode != "RGB":
                    raise ValueError(f"{where} must be an RGB image, got mode {img.mode!r}; use `.convert('RGB')`.")
            elif isinstance(img, (np.ndarray, torch.Tensor)):
                channel_axis = -1 if isinstance(img, np.ndarray) else -3  # HWC arrays, CHW tensors
                if img.ndim not in (3, 4) or img.shape[channel_axis] != 3:
                    raise ValueError(
                        f"{where} must have 3 (RGB) channels: HWC/NHWC arrays or CHW/NCHW tensors; got shape "
                        f"{tuple(img.shape)}."
                    )
            else:
                raise TypeError(f"{where} must be a PIL image, a numpy array or a torch tensor, got {type(img).__name__}.")
        height, width = self.image_processor.get_default_height_width(images[0])
        factor = self.vae_scale_factor
        if height % factor or width % factor or height < factor or width < factor:
            new_h, new_w = max(factor, height // factor * factor), max(factor, width // factor * factor)
            logger.warning(
                f"`{name}` is {width}×{height}; the VAE needs sides that are multiples of {factor}, so it is "
                f"resized to {new_w}×{new_h}."
            )
            height, width = new_h, new_w
        return self.image_processor.preprocess(image, height=height, width=width)

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
