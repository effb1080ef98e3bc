"""AutoEditPipeline: exact Dual-Schedule Inversion of real images, then reconstruction or editing.

Editing runs on the exact inversion with one of the DSI paper's methods (direct sampling with the target
prompt, P2P, MasaCtrl, SDEdit), or ``edit_method="auto"``: a BLIP caption when no source prompt is given,
the task classifier (or word rules) on the prompt pair, and the method the task calls for (§4.3).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Callable

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

from ..attention import attention_control
from ..checks import check_finite, check_number
from ..classifier import EditTaskClassifier
from ..schedulers import BRANCH_RULES, DualScheduleInversionScheduler, DualScheduleState
from .editing import DEFAULT_TARGET_RULE, EDIT_METHODS, P2P_SELF_REPLACE_MIN_LEVEL, EditPlan, plan_edit
from .inversion import DualScheduleInversionMixin, as_prompt_list, repeat_state
from .outputs import AutoEditPipelineOutput, DualScheduleInversionOutput
from .progress import progress_label
from .routing import EditRoute, caption_image, route_edit, task_method_table
from .validation import check_guidance, check_steps

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
    out = pipe("a dog sitting on a bench", image=image, source_prompt="a cat sitting on a bench",
               edit_method="auto")   # out.edit_task, out.edit_method: why this method was chosen
    ```

    ``task_methods`` (saved in ``model_index.json``) is the pipeline's own task → method table for
    ``"auto"``, e.g. chosen on a validation split for its task classifier; tasks it leaves out keep the
    paper's method.

    Optional components: ``task_classifier`` (`EditTaskClassifier` trained on this pipeline's text
    encoder; without it, ``"auto"`` decides by word rules) and ``captioner`` with ``caption_processor``
    (transformers BLIP captioning, e.g. ``Salesforce/blip-image-captioning-base``), which writes the source
    prompt when none is given.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor", "task_classifier", "captioner", "caption_processor"]
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
        task_classifier: EditTaskClassifier | None = None,
        captioner: BlipForConditionalGeneration | None = None,
        caption_processor: BlipProcessor | None = None,
        task_methods: dict[str, str] | None = None,
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
            safety_checker=safety_checker, feature_extractor=feature_extractor, task_classifier=task_classifier,
            captioner=captioner, caption_processor=caption_processor,
        )
        task_method_table(task_methods)  # a clear error for a bad saved table
        self.register_to_config(task_methods=task_methods)
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
        check_steps(num_inference_steps, minimum=2)
        check_guidance(guidance_scale)
        pixels = self.preprocess_images(image)
        if len(prompts) != pixels.shape[0]:
            if len(prompts) == 1:
                prompts = prompts * pixels.shape[0]
            else:
                raise ValueError(f"Got {pixels.shape[0]} images in `image` but {len(prompts)} prompts in `prompt`.")

        scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = self.encode_images(pixels).to(self._execution_device, self.unet.dtype)
        model_fn = self.guided_model_fn(prompts, guidance_scale, negative_prompt, cross_attention_kwargs)
        with progress_label(self, "inversion"):
            state = scheduler.invert(latents, model_fn, progress_bar=self.progress_bar)
        return DualScheduleInversionOutput(
            state=state, latents=latents, vae_reconstruction=self.decode_latents_to_images(latents, output_type),
            prompt=prompts, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, model_signature=self.model_signature(),
        )

    # ------------------------------------------------------------------ sampling

    def check_inputs(self, prompt, prompt_embeds, inversion, image, source_prompt, edit_method, task_methods,
                     num_inference_steps, height, width, callback_on_step_end_tensor_inputs, target_rule=None):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Give exactly one of `prompt` and `prompt_embeds`.")
        if target_rule is not None:
            rules = [target_rule] if isinstance(target_rule, str) else target_rule
            if not isinstance(rules, (list, tuple)) or any(rule not in BRANCH_RULES for rule in rules):
                raise ValueError(f"`target_rule` must be one of {', '.join(BRANCH_RULES)}, or a list of them (one per "
                                 f"prompt), got {target_rule!r}.")
            if not isinstance(target_rule, str) and prompt is not None and len(rules) != len(as_prompt_list(prompt)):
                raise ValueError(f"`target_rule` lists {len(rules)} rules for {len(as_prompt_list(prompt))} prompts; "
                                 "give one rule, or one per prompt.")
            if inversion is None and image is None:
                raise ValueError("`target_rule` applies to edits of an inverted image (give `inversion`, or `image` "
                                 "and `source_prompt`); generation from noise walks one DDIM chain.")
        if prompt is not None:
            as_prompt_list(prompt)
        if edit_method not in (*EDIT_METHODS, "auto"):
            raise ValueError(f"`edit_method` must be one of {', '.join(EDIT_METHODS)} or 'auto', got {edit_method!r}.")
        if image is not None and inversion is not None:
            raise ValueError("Give `image` (with `source_prompt`) or `inversion`, not both.")
        if image is not None and source_prompt is None and (self.captioner is None or self.caption_processor is None):
            raise ValueError("`source_prompt` is required with `image` (the caption of the image, which inversion "
                             "and the source branch of the edit use), unless the pipeline has a `captioner` and "
                             "`caption_processor` to write it.")
        if source_prompt is not None and not isinstance(source_prompt, str):
            raise TypeError(f"`source_prompt` must be a str (one source image), got {type(source_prompt).__name__}.")
        if inversion is not None:
            if not isinstance(inversion, DualScheduleInversionOutput):
                raise TypeError(
                    f"`inversion` must be the output of `pipe.invert(...)`, got {type(inversion).__name__}."
                )
            if source_prompt is not None and inversion.prompt != [source_prompt]:
                raise ValueError(f"`source_prompt` {source_prompt!r} differs from the prompt the image was inverted "
                                 f"with ({inversion.prompt}); leave it out or invert with it.")
            if inversion.model_signature is not None and inversion.model_signature != self.model_signature():
                raise ValueError("`inversion` was made by another pipeline (its UNet, VAE, text encoder or scheduler "
                                 "differ from this one's): invert the image with this pipeline.")
            latent_size = tuple(inversion.state.primary.shape[-2:])
            for name, size, latent in (("height", height, latent_size[0]), ("width", width, latent_size[1])):
                if size is not None and size != latent * self.vae_scale_factor:
                    raise ValueError(f"`{name}`={size} contradicts `inversion`, which holds "
                                     f"{latent_size[1] * self.vae_scale_factor}×{latent_size[0] * self.vae_scale_factor} "
                                     "images; leave it out (an inversion fixes the size).")
            if num_inference_steps is not None and num_inference_steps != inversion.num_inference_steps:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} differs from the {inversion.num_inference_steps} "
                    "steps used for inversion; sampling must walk the same dual schedule."
                )
        editing = edit_method != "direct" or image is not None or source_prompt is not None
        if editing and inversion is None and image is None:
            raise ValueError(f"edit_method={edit_method!r} edits a real image: give `image` and `source_prompt`, "
                             "or `inversion` from `pipe.invert`.")
        if editing and inversion is not None and inversion.state.batch_size != 1:
            raise ValueError(f"Editing methods edit one image at a time; `inversion` holds {inversion.state.batch_size}.")
        if editing and prompt is None:
            raise ValueError("Editing methods need the target `prompt` as text (its words steer the attention).")
        if edit_method == "auto" and prompt is not None and len(as_prompt_list(prompt)) != 1:
            raise ValueError("edit_method='auto' routes one target prompt at a time; give a single `prompt`.")
        if task_methods is not None:
            if edit_method != "auto":
                raise ValueError(f"`task_methods` applies to edit_method='auto' only, got edit_method={edit_method!r}.")
            task_method_table(task_methods, self.config.task_methods)
        for name, size in (("height", height), ("width", width)):
            if size is not None and (size <= 0 or size % self.vae_scale_factor):
                raise ValueError(f"`{name}` must be a positive multiple of {self.vae_scale_factor}, got {size}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}.")

    def _invert_for_edit(self, clean_latents, prompts, guidance_scale, negative_prompt, plan: EditPlan,
                         num_inference_steps: int) -> DualScheduleState:
        """Invert the source image once per branch, as ``[source] * len(prompts)``, under the edit's controller
        in passthrough. Sampling then evaluates the source branch with the same batch and the same attention
        kernels as inversion did, so the source branch comes back bit for bit (batch size and kernel choice
        change rounding, and DSI's chain would amplify the difference)."""
        scheduler = self._inversion_scheduler()
        scheduler.set_timesteps(num_inference_steps, device=self._execution_device, strength=plan.strength)
        model_fn = self.guided_model_fn([prompts[0]] * len(prompts), guidance_scale, negative_prompt)
        latents = clean_latents.expand(len(prompts), -1, -1, -1).contiguous()
        control = attention_control(self.unet, plan.controller.passthrough()) if plan.controller else nullcontext()
        with control, progress_label(self, "inversion"):
            return scheduler.invert(latents, model_fn, progress_bar=self.progress_bar)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        inversion: DualScheduleInversionOutput | None = None,
        image=None,
        source_prompt: str | None = None,
        edit_method: str = "direct",
        task_methods: dict[str, str] | str | None = None,
        target_rule: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        p2p_mode: str | None = None,
        cross_replace_steps=0.8,
        self_replace_steps=0.4,
        self_replace_min_level: int = P2P_SELF_REPLACE_MIN_LEVEL,
        refine_padding: str = "follow_end",
        equalizer: dict[str, float] | None = None,
        local_blend_words=None,
        local_blend_threshold: float = 0.3,
        local_blend_start: float = 0.2,
        masactrl_start_step: int = 4,
        masactrl_start_layer: int = 10,
        masactrl_total_layers: int | None = 16,
        masactrl_foreground_words=None,
        strength: float | None = None,
        return_attention_maps: bool = False,
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
        """Edit a real image, reconstruct it exactly, or generate from noise.

        Editing (``edit_method`` other than "direct", ``image``/``source_prompt`` given, or a single-image
        ``inversion`` with another prompt): the source prompt and the target prompt(s) run as one batch from
        one DSI state, inverted in that layout; the source branch reproduces the exact reconstruction
        (``output.source_latents``), the targets are edited, each moving by its ``target_rule``.

        Args:
            prompt: target prompt(s). With ``inversion`` and the "direct" method, the inversion's own prompt
                reconstructs the image exactly and another prompt edits it directly (paper Fig. 3c, with
                the ``target_rule``; a multi-image inversion samples each row with its own state).
            inversion: the output of `invert`; or give ``image`` and ``source_prompt`` to invert here.
            image, source_prompt: the real image and its caption (editing only); without ``source_prompt`` the
                pipeline's ``captioner`` writes one.
            edit_method: "direct" (sample the inversion with the target prompt), "p2p" (Prompt-to-Prompt:
                object replacement, scene editing), "masactrl" (mutual self-attention: action editing) or
                "sdedit" (from an intermediate noise level: object adding, style editing), or "auto": the task
                classifier (or, without one, word rules) decides the task and the task the method.
            task_methods: with "auto", overrides of the task → method table, e.g. {"style_editing": "p2p"},
                over the pipeline's own table (``config.task_methods``) and the paper's; "paper" for the
                paper's table alone (Table 5).
            target_rule: how rows with a changed prompt move on the dual schedule (`DualScheduleInversionScheduler`
                module docstring): "ddim", "anchored", "midpoint" or "coupled" (the paper's rule, which lets the
                edit fall apart), or a list with one rule per prompt; None takes ``DEFAULT_TARGET_RULE``, chosen
                on the Shapes validation split. The source row and rows with the inversion's own prompt are
                always coupled, and exact.
            num_inference_steps: defaults to the inversion's (and must equal it); 50 otherwise.
            guidance_scale: defaults to the inversion's; 7.5 otherwise.
            negative_prompt: defaults to the inversion's.
            p2p_mode: "replace" (word swap, same word count) or "refine" (added/changed words); None picks
                replace when every prompt has the same number of words.
            cross_replace_steps: P2P: fraction of steps (or (start, end), or {word: ...}) in which targets
                take the source's cross-attention.
            self_replace_steps: P2P: same for self-attention.
            self_replace_min_level: P2P: self-attention is replaced only this many downsamplings or more below
                the latents (2: SD 1.x's 16×16 and 8×8 maps, the P2P notebooks' choice; the deepest level on
                a shallower UNet).
            refine_padding: P2P Refine: where target padding reads from, "follow_end" (after the end token,
                in order) or "same_position" (the P2P reference code's mapping); see `refine_alignment`.
            equalizer: P2P Reweight: {word: scale} on the target's attention to those words.
            local_blend_words: P2P LocalBlend: one word (or list of words) per prompt, source first; outside
                their region the targets keep the source's latents.
            local_blend_threshold, local_blend_start: LocalBlend's mask threshold and first step (fraction).
            masactrl_start_step, masactrl_start_layer: MasaCtrl: first step and first self-attention layer in
                which targets read the source's keys and values.
            masactrl_total_layers: the depth ``masactrl_start_layer`` counts in (16: SD 1.x's, rescaled to this
                UNet); None counts this UNet's self-attention layers directly.
            masactrl_foreground_words: MasaCtrl with masks from cross-attention: foreground word(s) per prompt.
            strength: SDEdit: fraction of the schedule inverted and resampled (1 = all of it); 0.5 when left out.
                Given with another method it is ignored, with a warning.
            return_attention_maps: return per-token cross-attention maps of each target prompt.
            height, width, generator, latents: for generation from noise only.
            callback_on_step_end: diffusers-style callback. A returned ``latents`` replaces the latent the
                scheduler carries; the callback may instead edit both latents of ``pipe.scheduler.state`` in
                place (LocalBlend-style), and the next step sees the edit.
        """
        self.check_inputs(prompt, prompt_embeds, inversion, image, source_prompt, edit_method, task_methods,
                          num_inference_steps, height, width, callback_on_step_end_tensor_inputs, target_rule)
        scheduler = self._inversion_scheduler()
        device = self._execution_device
        if inversion is not None:
            num_inference_steps = inversion.num_inference_steps
            guidance_scale = inversion.guidance_scale if guidance_scale is None else guidance_scale
            negative_prompt = inversion.negative_prompt if negative_prompt is None else negative_prompt
        num_inference_steps = 50 if num_inference_steps is None else num_inference_steps
        guidance_scale = 7.5 if guidance_scale is None else guidance_scale
        check_steps(num_inference_steps, minimum=2 if inversion is not None or image is not None else 1)
        check_guidance(guidance_scale)
        check_number(strength, "strength", low=0.0, low_open=True, high=1.0, optional=True)
        check_finite(latents, "latents")
        check_finite(prompt_embeds, "prompt_embeds")

        target_rule = DEFAULT_TARGET_RULE if target_rule is None else target_rule
        row_rules = None if prompt is None else (
            [target_rule] * len(as_prompt_list(prompt)) if isinstance(target_rule, str) else list(target_rule))
        # A single-image inversion sampled with another prompt is an edit: it gets a source row to anchor to.
        changed = inversion is not None and prompt is not None and inversion.state.batch_size == 1 and any(
            text != inversion.prompt[0] for text in as_prompt_list(prompt))
        editing = edit_method != "direct" or image is not None or source_prompt is not None or changed or (
            return_attention_maps and inversion is not None)
        plan, route = EditPlan(edit_method), None
        if editing:
            if inversion is not None:
                source_prompt = inversion.prompt[0]
            elif source_prompt is None:
                source_prompt = caption_image(self.captioner, self.caption_processor,
                                              self.image_processor.postprocess(self.preprocess_images(image))[0])
            prompt = [source_prompt, *as_prompt_list(prompt)]
            if edit_method == "auto":
                route = self.route_edit(source_prompt, prompt[1], task_methods)
                edit_method = route.method
            if strength is not None and edit_method != "sdedit":
                warnings.warn(f"`strength` applies to SDEdit only; edit_method={edit_method!r} ignores it.", stacklevel=2)
            if edit_method == "masactrl" and not 0 <= masactrl_start_step < num_inference_steps:
                raise ValueError(f"`masactrl_start_step` must be in [0, {num_inference_steps}) (the sampling steps), "
                                 f"got {masactrl_start_step}: MasaCtrl would never act.")
            plan = plan_edit(
                edit_method, prompt, self.tokenizer, p2p_mode=p2p_mode, cross_replace_steps=cross_replace_steps,
                self_replace_steps=self_replace_steps, self_replace_min_level=self_replace_min_level,
                refine_padding=refine_padding, equalizer=equalizer, local_blend_words=local_blend_words,
                local_blend_threshold=local_blend_threshold, local_blend_start=local_blend_start,
                masactrl_start_step=masactrl_start_step, masactrl_start_layer=masactrl_start_layer,
                masactrl_total_layers=masactrl_total_layers, masactrl_foreground_words=masactrl_foreground_words,
                strength=0.5 if strength is None else strength, return_attention_maps=return_attention_maps)
            clean = inversion.latents if inversion is not None else \
                self.encode_images(self.preprocess_images(image)).to(device, self.unet.dtype)
            if clean.shape[0] != 1:
                raise ValueError(f"Editing methods edit one image at a time; `image` holds {clean.shape[0]}.")
            state = self._invert_for_edit(clean, prompt, guidance_scale, negative_prompt, plan, num_inference_steps)
        elif return_attention_maps:
            plan = plan_edit("direct", as_prompt_list(prompt), self.tokenizer, return_attention_maps=True)

        prompt_embeds, negative_prompt_embeds = self._encode_prompts(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale
        )
        batch_size = prompt_embeds.shape[0]
        if not editing:
            scheduler.set_timesteps(num_inference_steps, device=device)
        branch_rules = None
        if editing:
            # Rows with the source's own prompt stay coupled (exact); a bare "anchored" anchors to row 0.
            branch_rules = ["coupled", *("coupled" if text == prompt[0] else rule
                                         for text, rule in zip(prompt[1:], row_rules, strict=True))]
            latents = scheduler.begin(state, branch_rules)
        elif inversion is not None:
            state = repeat_state(inversion.state, batch_size)
            branch_rules = self._branch_rules_for_rows(state, inversion.prompt, prompt, row_rules)
            latents = scheduler.begin(state, branch_rules)
        elif latents is None:
            height = height or self.unet.config.sample_size * self.vae_scale_factor
            width = width or self.unet.config.sample_size * self.vae_scale_factor
            shape = (batch_size, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        model_fn = self._model_fn(prompt_embeds, negative_prompt_embeds, guidance_scale, cross_attention_kwargs)

        controller, local_blend = plan.controller, plan.local_blend
        if controller is not None:
            controller.configure(batch_size, guidance_scale > 1.0)
        timesteps = scheduler.timesteps
        num_steps = (len(timesteps) + 1) // 2  # one auxiliary and one primary evaluation per step
        control = attention_control(self.unet, controller) if controller is not None else nullcontext()
        sync_gaps = []
        with control, progress_label(self, "sampling"), self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if controller is not None:
                    controller.set_step(i // 2, num_steps)
                step = scheduler.step(model_fn(latents, t), t, latents)
                latents = step.prev_sample
                if step.sync_gap is not None:
                    sync_gaps.append(step.sync_gap)
                if local_blend is not None:
                    if i + 1 < len(timesteps):  # both latents of the dual state, then hand out the blended one
                        state = scheduler.state
                        state.primary, state.auxiliary = local_blend(state.primary, i // 2), local_blend(
                            state.auxiliary, i // 2)
                        latents = scheduler.model_input()
                    else:
                        latents = local_blend(latents, i // 2)
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

        source_latents, attention_maps = None, None
        sync_gap = torch.stack(sync_gaps) if sync_gaps else None
        if editing:
            source_latents, latents = latents[:1], latents[1:]
            sync_gap = sync_gap[:, 1:]
        parameters = dict(plan.parameters)
        if branch_rules is not None:  # the rule rows with a changed prompt followed
            parameters["target_rule"] = target_rule
        if plan.store is not None and return_attention_maps:
            first = 1 if editing else 0
            attention_maps = [plan.store.token_maps(self.tokenizer, text, prompt_index=index)
                              for index, text in enumerate(prompt) if index >= first]
        images, has_nsfw = latents, None
        if output_type != "latent":
            images = self.decode_latents(latents)
            images, has_nsfw = StableDiffusionPipeline.run_safety_checker(self, images, device, prompt_embeds.dtype)
            do_denormalize = None if has_nsfw is None else [not flagged for flagged in has_nsfw]
            images = self.image_processor.postprocess(images, output_type=output_type, do_denormalize=do_denormalize)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, latents, has_nsfw)
        return AutoEditPipelineOutput(
            images=images, latents=latents, nsfw_content_detected=has_nsfw, source_latents=source_latents,
            edit_method=edit_method, edit_parameters=parameters, attention_maps=attention_maps, sync_gap=sync_gap,
            source_prompt=prompt[0] if editing else None, edit_task=route and route.task,
            task_probabilities=route and route.probabilities, task_rule=route and route.rule,
        )

    @staticmethod
    def _branch_rules_for_rows(state: DualScheduleState, inverted_prompts: list[str], prompt, row_rules):
        """Rows of a multi-image inversion: coupled where the prompt is the row's own inversion prompt (exact),
        the row's rule elsewhere; "anchored" rows anchor to a coupled row inverted from the same image."""
        if prompt is None:  # prompt_embeds: nothing says which row is a source
            return None
        prompts = as_prompt_list(prompt)
        if len(inverted_prompts) == 1:
            inverted_prompts = inverted_prompts * len(prompts)
        coupled = [i for i, (text, own) in enumerate(zip(prompts, inverted_prompts)) if text == own]
        rules = []
        for row, (text, own, rule) in enumerate(zip(prompts, inverted_prompts, row_rules)):
            if text == own:
                rules.append("coupled")
            elif rule != "anchored":
                rules.append(rule)
            else:
                same_image = [j for j in coupled if torch.equal(state.primary[j], state.primary[row])
                              and torch.equal(state.auxiliary[j], state.auxiliary[row])]
                if not same_image:
                    raise ValueError(
                        f"target_rule='anchored' needs, for prompt {row} ({text!r}), a row that samples the same "
                        "inverted image with its own inversion prompt; add one, or pass target_rule='midpoint', "
                        "'ddim' or 'coupled'.")
                rules.append(("anchored", same_image[0]))
        return rules

    def route_edit(self, source_prompt: str, target_prompt: str, task_methods: dict[str, str] | str | None = None
                   ) -> EditRoute:
        """What ``edit_method="auto"`` would do for this prompt pair: the task, how it was decided, the method."""
        table = task_method_table(task_methods, self.config.task_methods)
        return route_edit(source_prompt, target_prompt, table, self.task_classifier, self.text_encoder, self.tokenizer)
