"""AutoEditPipeline: exact Dual-Schedule Inversion of real images, then reconstruction or editing.

First cut: editing is direct (sample the inverted state with the target prompt, paper Fig. 3c). The
editing methods (P2P, MasaCtrl, SDEdit) and the task classifier that picks among them plug in later.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

from ..schedulers import DualScheduleInversionScheduler
from .inversion import DualScheduleInversionMixin, as_prompt_list, repeat_state
from .outputs import AutoEditPipelineOutput, DualScheduleInversionOutput

logger = logging.get_logger(__name__)


class AutoEditPipeline(
    DiffusionPipeline,
    StableDiffusionMixin,
    TextualInversionLoaderMixin,
    StableDiffusionLoraLoaderMixin,
    DualScheduleInversionMixin,
):
    """Invert a real image exactly with Dual-Schedule Inversion, then reconstruct or edit it.

    Loads any Stable Diffusion 1.x/2.x checkpoint. A scheduler that is not a
    `DualScheduleInversionScheduler` is converted from its config (with a warning).

    ```py
    pipe = AutoEditPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    inversion = pipe.invert(image, prompt="a cat sitting on a bench")
    same = pipe("a cat sitting on a bench", inversion=inversion).images[0]   # exact reconstruction
    edit = pipe("a dog sitting on a bench", inversion=inversion).images[0]   # direct edit
    ```
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor"]
    _exclude_from_cpu_offload = ["safety_checker"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DualScheduleInversionScheduler,
        safety_checker: StableDiffusionSafetyChecker | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ):
        super().__init__()
        if not isinstance(scheduler, DualScheduleInversionScheduler):
            logger.warning(
                f"AutoEditPipeline inverts with DualScheduleInversionScheduler; converting the given "
                f"{type(scheduler).__name__} from its config."
            )
            scheduler = DualScheduleInversionScheduler.from_config(scheduler.config)
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=safety_checker, feature_extractor=feature_extractor,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # ------------------------------------------------------------------ conditioning

    def _model_fn(self, prompt_embeds, negative_prompt_embeds, guidance_scale, cross_attention_kwargs=None):
        """``model_fn(latents, t)`` → guided noise prediction; inversion and sampling share it, so the UNet
        sees the same batches in both directions."""
        unet, do_cfg = self.unet, guidance_scale > 1.0
        embeds = torch.cat([negative_prompt_embeds, prompt_embeds]) if do_cfg else prompt_embeds

        def model_fn(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            out = unet(model_input, t, encoder_hidden_states=embeds, cross_attention_kwargs=cross_attention_kwargs,
                       return_dict=False)[0]
            if not do_cfg:
                return out
            uncond, cond = out.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        return model_fn

    def _encode_prompts(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale):
        """Text embeddings through diffusers' own `StableDiffusionPipeline.encode_prompt` (textual inversion,
        LoRA scale and truncation handled as users expect). A single negative prompt applies to all."""
        if prompt is not None:
            prompt = as_prompt_list(prompt)
        if negative_prompt is not None:
            negative_prompt = as_prompt_list(negative_prompt, "negative_prompt")
            batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
            if len(negative_prompt) == 1:
                negative_prompt = negative_prompt * batch_size
        return StableDiffusionPipeline.encode_prompt(
            self, prompt, self._execution_device, 1, guidance_scale > 1.0, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        )

    def guided_model_fn(self, prompt: str | list[str], guidance_scale: float = 7.5,
                        negative_prompt: str | list[str] | None = None, cross_attention_kwargs: dict | None = None):
        """The ``model_fn(latents, t)`` that `invert` and `__call__` use for these prompts: hand it to
        `DualScheduleInversionScheduler.invert`/`sample` or to another inversion method to compare."""
        prompt_embeds, negative_embeds = self._encode_prompts(prompt, negative_prompt, None, None, guidance_scale)
        return self._model_fn(prompt_embeds, negative_embeds, guidance_scale, cross_attention_kwargs)

    # ------------------------------------------------------------------ inversion

    @torch.no_grad()
    def invert(
        self,
        image,
        prompt: str | list[str] = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        output_type: str = "pil",
        cross_attention_kwargs: dict | None = None,
    ) -> DualScheduleInversionOutput:
        """Invert real image(s) into the dual noisy state, exactly (Eq. 11–12).

        Args:
            image: RGB image(s): PIL, HWC numpy array or CHW tensor, or a list of them.
            prompt: source prompt(s) describing the image; one per image, or one for all.
            num_inference_steps: primary steps N; the UNet runs 2N − 2 times (with CFG, on a doubled batch).
            guidance_scale: classifier-free guidance for inversion; sampling with the same prompt and scale
                returns the image's latents exactly, at any scale.
            negative_prompt: optional negative prompt(s), as in Stable Diffusion.
            output_type: format of ``vae_reconstruction``.
        """
        scheduler = self._inversion_scheduler()
        prompts = as_prompt_list(prompt)
        pixels = self.preprocess_images(image)
        if len(prompts) != pixels.shape[0]:
            if len(prompts) == 1:
                prompts = prompts * pixels.shape[0]
            else:
                raise ValueError(f"Got {pixels.shape[0]} images in `image` but {len(prompts)} prompts in `prompt`.")

        scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = self.encode_images(pixels).to(self._execution_device, self.unet.dtype)
        model_fn = self.guided_model_fn(prompts, guidance_scale, negative_prompt, cross_attention_kwargs)
        state = scheduler.invert(latents, model_fn, progress_bar=self.progress_bar)
        return DualScheduleInversionOutput(
            state=state, latents=latents, vae_reconstruction=self.decode_latents_to_images(latents, output_type),
            prompt=prompts, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
        )

    # ------------------------------------------------------------------ sampling

    def check_inputs(self, prompt, prompt_embeds, inversion, num_inference_steps, height, width,
                     callback_on_step_end_tensor_inputs):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Give exactly one of `prompt` and `prompt_embeds`.")
        if prompt is not None:
            as_prompt_list(prompt)
        if inversion is not None:
            if not isinstance(inversion, DualScheduleInversionOutput):
                raise TypeError(
                    f"`inversion` must be the output of `pipe.invert(...)`, got {type(inversion).__name__}."
                )
            if num_inference_steps is not None and num_inference_steps != inversion.num_inference_steps:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} differs from the {inversion.num_inference_steps} "
                    "steps used for inversion; sampling must walk the same dual schedule."
                )
        for name, size in (("height", height), ("width", width)):
            if size is not None and (size <= 0 or size % self.vae_scale_factor):
                raise ValueError(f"`{name}` must be a positive multiple of {self.vae_scale_factor}, got {size}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}.")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        inversion: DualScheduleInversionOutput | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> AutoEditPipelineOutput | tuple:
        """Reconstruct or edit an inverted image, or generate from noise when ``inversion`` is None.

        Args:
            prompt: target prompt(s). The inversion's own prompt reconstructs the image exactly; another
                prompt edits it directly (paper Fig. 3c). One image inverted with several prompts gives one
                branch per prompt (e.g. ``[source, target]``).
            inversion: the output of `invert`.
            num_inference_steps: defaults to the inversion's (and must equal it); 50 without inversion.
            guidance_scale: defaults to the inversion's; 7.5 without inversion.
            negative_prompt: defaults to the inversion's.
            height, width, generator, latents: for generation from noise only.
            callback_on_step_end: diffusers-style callback. A returned ``latents`` replaces the latent the
                scheduler carries; the callback may instead edit both latents of ``pipe.scheduler.state`` in
                place (LocalBlend-style), and the next step sees the edit.
        """
        self.check_inputs(prompt, prompt_embeds, inversion, num_inference_steps, height, width,
                          callback_on_step_end_tensor_inputs)
        scheduler = self._inversion_scheduler()
        device = self._execution_device
        if inversion is not None:
            num_inference_steps = inversion.num_inference_steps
            guidance_scale = inversion.guidance_scale if guidance_scale is None else guidance_scale
            negative_prompt = inversion.negative_prompt if negative_prompt is None else negative_prompt
        num_inference_steps = 50 if num_inference_steps is None else num_inference_steps
        guidance_scale = 7.5 if guidance_scale is None else guidance_scale

        prompt_embeds, negative_prompt_embeds = self._encode_prompts(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale
        )
        batch_size = prompt_embeds.shape[0]
        scheduler.set_timesteps(num_inference_steps, device=device)
        if inversion is not None:
            latents = scheduler.begin(repeat_state(inversion.state, batch_size))
        elif latents is None:
            height = height or self.unet.config.sample_size * self.vae_scale_factor
            width = width or self.unet.config.sample_size * self.vae_scale_factor
            shape = (batch_size, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        model_fn = self._model_fn(prompt_embeds, negative_prompt_embeds, guidance_scale, cross_attention_kwargs)

        timesteps = scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                latents = scheduler.step(model_fn(latents, t), t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local_vars = locals()
                    callback_kwargs = {k: local_vars[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if "latents" in callback_outputs:
                        latents = callback_outputs.pop("latents")
                    elif i + 1 < len(timesteps):  # pick up in-place edits of scheduler.state
                        latents = scheduler.model_input()
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                    model_fn = self._model_fn(prompt_embeds, negative_prompt_embeds, guidance_scale, cross_attention_kwargs)
                progress_bar.update()

        images, has_nsfw = latents, None
        if output_type != "latent":
            images = self.decode_latents(latents)
            images, has_nsfw = StableDiffusionPipeline.run_safety_checker(self, images, device, prompt_embeds.dtype)
            do_denormalize = None if has_nsfw is None else [not flagged for flagged in has_nsfw]
            images = self.image_processor.postprocess(images, output_type=output_type, do_denormalize=do_denormalize)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, latents, has_nsfw)
        return AutoEditPipelineOutput(images=images, latents=latents, nsfw_content_detected=has_nsfw)
