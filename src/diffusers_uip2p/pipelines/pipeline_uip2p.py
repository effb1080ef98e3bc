"""UIP2PPipeline: InstructPix2Pix inference, plus the checks that UIP2P's Edit Reversibility Constraint makes
meaningful at inference time.

UIP2P changes how the model is trained, not how it runs: a UIP2P checkpoint is an InstructPix2Pix checkpoint,
and a plain call here *is* diffusers' `StableDiffusionInstructPix2PixPipeline.__call__` (same code, same bits).
What UIP2P adds is a model trained so that a reverse instruction undoes a forward one. So, given the reverse
instruction, an edit can be checked: apply the reverse to the result and measure how close it comes back
(``reverse_instruction=``), and among several seeds keep the edit that comes back best (``num_candidates=``).
"""

import inspect
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..attention import AttentionController, AttentionStore, attention_control
from ..checks import check_finite
from .progress import progress_label
from .validation import DEFAULT_MAX_PIXELS, check_generator, check_guidance, check_steps, to_unit_pixels

_PARENT_CALL = inspect.signature(StableDiffusionInstructPix2PixPipeline.__call__)
MAX_SEED = 2**31 - 1
REVERSIBILITY_METRICS = ("image", "latent")
_REVERSE_KEPT = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "eta", "cross_attention_kwargs")


@dataclass
class UIP2PPipelineOutput(BaseOutput):
    """Output of `UIP2PPipeline.__call__`; fields that were not requested are None (and left out of tuples).

    Args:
        images: the edited images (with ``num_candidates=k``: k per input row, best first).
        nsfw_content_detected: per image, if a safety checker ran.
        reconstructions: the reverse instruction applied to each edited image.
        reversibility: the score candidates are ranked by: ``reversibility_image`` or ``reversibility_latent``
            (``reversibility_metric``). Higher is better; 1 is a perfect round trip.
        reversibility_latent: ``1 - ‖z_rec - z_in‖ / ‖z_in‖`` (L2), with z_in the input image's VAE latents (the
            ``latent_dist.mode()`` the UNet is conditioned on) and z_rec the reverse edit's output latents
            divided by the VAE scaling factor (what decodes to the reconstruction). Can be negative.
        reversibility_image: ``1 - mean |x_in - x_rec|`` over pixels and channels in [0, 1], at the size the
            pipeline edits at (the preprocessed input). In [0, 1].
        seeds: with ``num_candidates`` or ``seed``, the seed of each image: a plain call with the same arguments
            and ``generator=torch.Generator().manual_seed(seed)`` reproduces it (its row of that batch).
        attention_maps: with ``return_attention_maps=True``, per image, (token, [h, w] map) pairs of the
            instruction's cross-attention; draw them with `diffusers_uip2p.attention.draw_token_maps`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    reconstructions: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    reversibility: list[float] | None = None
    reversibility_latent: list[float] | None = None
    reversibility_image: list[float] | None = None
    seeds: list[int] | None = None
    attention_maps: list | None = None


@dataclass
class UIP2PSequenceOutput(BaseOutput):
    """Output of `UIP2PPipeline.edit_sequence`. Args:
        images: per instruction, the ``.images`` a plain call returns after that turn.
        reverse_images: per reverse instruction (applied last to first), the images after it; the last entry
            is the reconstruction of the input.
        reversibility_latent, reversibility_image: of that reconstruction, as in `UIP2PPipelineOutput`.
    """

    images: list
    reverse_images: list | None = None
    reversibility_latent: list[float] | None = None
    reversibility_image: list[float] | None = None


def reversibility_scores(input_pixels, reconstruction_pixels, input_latents, reconstruction_latents):
    """(latent, image) scores per row, as documented in `UIP2PPipelineOutput`. Pixels in [0, 1]; latents
    unscaled (``latent_dist.mode()`` space)."""
    x_in, x_rec = input_pixels.float(), reconstruction_pixels.float()
    image = 1 - (x_in - x_rec).abs().flatten(1).mean(1)
    z_in, z_rec = input_latents.float().flatten(1), reconstruction_latents.float().flatten(1)
    latent = 1 - (z_rec - z_in).norm(dim=1) / z_in.norm(dim=1).clamp_min(1e-12)
    return latent.cpu().tolist(), image.cpu().tolist()


def _count_images(image) -> int:
    if isinstance(image, list):
        return sum(_count_images(item) for item in image)
    if isinstance(image, (torch.Tensor, np.ndarray, PIL.Image.Image)):
        return int(image.shape[0]) if getattr(image, "ndim", 3) == 4 else 1
    raise TypeError(f"`image` must be a PIL image, numpy array, torch tensor or a list, got {type(image).__name__}.")


def _gather(outputs: list, order: list[tuple[int, int]]):
    """Rows ``order`` = [(run, row), ...] of per-run outputs (lists, arrays or tensors), in that order."""
    picked = [outputs[run][row] for run, row in order]
    stack = torch.stack if isinstance(outputs[0], torch.Tensor) else np.stack
    return stack(picked) if isinstance(outputs[0], (torch.Tensor, np.ndarray)) else picked


class UIP2PPipeline(StableDiffusionInstructPix2PixPipeline):
    """InstructPix2Pix-architecture editing for UIP2P checkpoints (loads like the parent: a diffusers folder,
    a Hub id, ``from_single_file``, ``from_pipe``), with reverse self-checks, candidate ranking, multi-turn
    editing and cross-attention maps.

    ```py
    pipe = UIP2PPipeline.from_pretrained(path, safety_checker=None, feature_extractor=None)
    edited = pipe("make it winter", image).images[0]                         # exactly InstructPix2Pix
    out = pipe("make it winter", image, reverse_instruction="make it summer", num_candidates=4, seed=0)
    best, score, seed = out.images[0], out.reversibility[0], out.seeds[0]
    ```
    """

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler: KarrasDiffusionSchedulers,
                 safety_checker: StableDiffusionSafetyChecker | None = None,
                 feature_extractor: CLIPImageProcessor | None = None,
                 image_encoder: CLIPVisionModelWithProjection | None = None, requires_safety_checker: bool = True):
        self._check_unet(unet)
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                         safety_checker=safety_checker, feature_extractor=feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)

    @staticmethod
    def _check_unet(unet) -> None:
        """A text-to-image UNet would only fail deep inside the first call, with a config dump: say what to do."""
        config = getattr(unet, "config", None)
        if config is not None and config.in_channels == config.out_channels:
            raise ValueError(
                f"`unet` has {config.in_channels} input channels: it is a text-to-image UNet. InstructPix2Pix/UIP2P "
                f"UNets take {2 * config.out_channels} (noisy latents + image latents); widen it with "
                "`diffusers_uip2p.pipelines.convert_unet_to_instruct_pix2pix(unet)` (or a whole folder with "
                "`convert_pipeline_folder`) and train it."
            )

    max_image_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images are refused; None: no limit

    def normalise_image(self, image):
        """``image`` in any accepted form (`validation` module) → NCHW float pixels in [0, 1], which the parent
        maps to [−1, 1] as it maps its own PIL input (RGB PIL images it needs not resize go through as they
        are); a tensor with the VAE's latent channels stays image latents, as in diffusers' InstructPix2Pix."""
        if image is None:
            raise ValueError("`image` is required: InstructPix2Pix/UIP2P edits an input image.")
        latent_channels = self.vae.config.latent_channels
        if isinstance(image, torch.Tensor) and image.ndim in (3, 4) and image.shape[-3] == latent_channels:
            check_finite(image, "image")
            return image
        pixels = to_unit_pixels(image, "image", self.vae_scale_factor, self.max_image_pixels)
        images = image if isinstance(image, list) else [image]
        if all(isinstance(i, PIL.Image.Image) and i.mode == "RGB" and i.size == pixels.shape[:-3:-1] for i in images):
            return image  # what the parent reads right: keep its own path, bit for bit
        return pixels

    def check_edit_inputs(self, prompt, image, prompt_embeds) -> int:
        """Validate what the parent checks late or not at all; returns the prompt batch size."""
        self._check_unet(self.unet)
        if image is None:
            raise ValueError("`image` is required: InstructPix2Pix/UIP2P edits an input image.")
        if prompt is not None and not isinstance(prompt, str) and not (
                isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            raise TypeError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}.")
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else (
            prompt_embeds.shape[0] if prompt_embeds is not None else None)
        images = _count_images(image)
        if batch is not None and images not in (1, batch):
            raise ValueError(f"`image` holds {images} images but `prompt` {batch} prompts: give one image per prompt, "
                             "or a single image for all.")
        return batch

    def check_numbers(self, call: dict, batch: int | None) -> None:
        """Steps, guidances, latents and generators, before any model runs (the parent would take a NaN or
        negative guidance silently as no guidance, and cut or break on a generator list of the wrong length)."""
        check_steps(call["num_inference_steps"])
        check_guidance(call["guidance_scale"])
        check_guidance(call["image_guidance_scale"], "image_guidance_scale")
        check_finite(call["latents"], "latents")
        check_finite(call["prompt_embeds"], "prompt_embeds")
        if batch is not None:
            check_generator(call["generator"], batch * (call["num_images_per_prompt"] or 1))

    def check_uip2p_inputs(self, call: dict, reverse_instruction, num_candidates, seed, reversibility_metric,
                           return_attention_maps, batch) -> None:
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int):
            raise TypeError(f"`num_candidates` must be an int, got {type(num_candidates).__name__}.")
        if num_candidates < 1:
            raise ValueError(f"`num_candidates` must be >= 1, got {num_candidates}.")
        if num_candidates > 1 and reverse_instruction is None:
            raise ValueError("`num_candidates` > 1 ranks candidates by reversibility: give `reverse_instruction`.")
        if num_candidates > 1 and call["latents"] is not None:
            raise ValueError("`latents` fixes every candidate's initial noise; leave it out with `num_candidates`.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise TypeError(f"`seed` must be a non-negative int, got {seed!r}.")
        if (seed is not None or num_candidates > 1) and isinstance(call["generator"], list):
            raise TypeError("`generator` must be a single torch.Generator (or None) with `num_candidates` or `seed`.")
        if reversibility_metric not in REVERSIBILITY_METRICS:
            raise ValueError(f"`reversibility_metric` must be in {REVERSIBILITY_METRICS}: {reversibility_metric!r}.")
        if reverse_instruction is not None and not isinstance(reverse_instruction, str) and not (
                isinstance(reverse_instruction, list) and all(isinstance(r, str) for r in reverse_instruction)):
            raise TypeError(f"`reverse_instruction` must be a str or a list of str, got {reverse_instruction!r}.")
        if isinstance(reverse_instruction, list) and len(reverse_instruction) != batch:
            raise ValueError(f"`reverse_instruction` holds {len(reverse_instruction)} instructions but `prompt` "
                             f"{batch}: give one reverse instruction per prompt, or a single str.")
        if return_attention_maps and call["prompt"] is None:
            raise ValueError("`return_attention_maps` needs `prompt` as text (the maps are per token).")

    @torch.no_grad()
    def __call__(self, prompt=None, image=None, *args, reverse_instruction: str | list[str] | None = None,
                 num_candidates: int = 1, seed: int | None = None, reversibility_metric: str = "image",
                 reverse_kwargs: dict | None = None, return_attention_maps: bool = False, **kwargs):
        """Edit ``image`` following ``prompt``; every argument of `StableDiffusionInstructPix2PixPipeline.__call__`
        works as there. Without the arguments below, this *is* the parent's call (bit for bit, same speed).

        Args:
            reverse_instruction: the instruction that undoes ``prompt`` (one str, or one per prompt). The reverse
                edit runs on each result, conditioned on the result's pixels as a user would feed them back
                (in [0, 1], without 8-bit rounding), with the same steps and guidance (override them with
                ``reverse_kwargs``) and the forward call's generator, continued. Fills ``reconstructions`` and the
                scores of `UIP2PPipelineOutput`. Costs one more edit, one VAE decode and one VAE encode.
            num_candidates: run k seeds and return the k edits of each input best first (highest
                ``reversibility``). Candidates run one after another, each exactly as a plain call with its seed,
                so that ``seeds`` reproduce them; k candidates cost k times one checked edit.
            seed: candidate j uses seed ``seed + j``. Without it, k seeds are drawn in [0, 2³¹) with
                ``torch.randint`` from ``generator`` (or torch's global generator). Generators are CPU ones.
            reversibility_metric: "image" or "latent": which score ``reversibility`` holds and ranks by.
            reverse_kwargs: parent-call arguments for the reverse edit only, e.g. ``{"image_guidance_scale": 2}``.
            return_attention_maps: record the forward edit's cross-attention (text-conditioned branch, UNet
                levels of the two lowest resolutions with cross-attention, averaged over heads, layers and
                steps). The recording layers compute softmax explicitly instead of the fused kernel, so images
                may differ from a plain call in the last bits.
        """
        if reverse_kwargs and reverse_instruction is None:
            raise ValueError("`reverse_kwargs` configures the reverse edit: give `reverse_instruction` too.")
        features = reverse_instruction is not None or num_candidates != 1 or seed is not None or return_attention_maps
        image = self.normalise_image(image)
        call = self._bind(prompt, image, args, kwargs)
        batch = self.check_edit_inputs(prompt, image, call["prompt_embeds"])
        self.check_numbers(call, batch)
        if not features:
            out = super().__call__(prompt, image, *args, **kwargs)
            return UIP2PPipelineOutput(**out) if isinstance(out, BaseOutput) else out

        self.check_uip2p_inputs(call, reverse_instruction, num_candidates, seed, reversibility_metric,
                                return_attention_maps, batch)
        output_type, return_dict = call["output_type"], call["return_dict"]
        per_prompt = call["num_images_per_prompt"] or 1
        rows = batch * per_prompt
        call.update(output_type="latent", return_dict=True)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        reverse = [reverse_instruction] * batch if isinstance(reverse_instruction, str) else reverse_instruction
        if reverse is not None:
            input_pixels, input_latents = self._input_for_scores(image, rows)
            reverse = [reverse[r // per_prompt] for r in range(rows)]

        runs, seeds = self._candidate_runs(num_candidates, seed, call["generator"])
        results = []
        for number, generator in enumerate(runs, 1):
            call["generator"] = generator
            result = {}
            candidate = f"candidate {number}/{len(runs)} · " if len(runs) > 1 else ""
            with progress_label(self, f"{candidate}forward" if reverse is not None or candidate else "edit"):
                if return_attention_maps:
                    latents, maps = self._edit_with_maps(call, rows, [prompts[r // per_prompt] for r in range(rows)])
                    result["attention_maps"] = maps
                else:
                    latents = StableDiffusionInstructPix2PixPipeline.__call__(self, **call).images
            result["images"], pixels01, result["nsfw_content_detected"] = self._decode(latents, output_type)
            if reverse is not None:
                reverse_call = {**{name: call[name] for name in _REVERSE_KEPT}, **(reverse_kwargs or {})}
                reverse_call.update(generator=generator, output_type="latent", return_dict=True)
                with progress_label(self, f"{candidate}reverse"):
                    back = StableDiffusionInstructPix2PixPipeline.__call__(self, reverse, pixels01, **reverse_call).images
                result["reconstructions"], back_pixels, _ = self._decode(back, output_type)
                result["reversibility_latent"], result["reversibility_image"] = reversibility_scores(
                    input_pixels, back_pixels, input_latents, back / self.vae.config.scaling_factor)
                result["reversibility"] = result[f"reversibility_{reversibility_metric}"]
            results.append(result)

        def rank(row):  # best first (a stable sort: ties keep the seed order)
            candidates = range(len(runs))
            return sorted(candidates, key=lambda j: -results[j]["reversibility"][row]) if reverse else candidates

        order = [(j, row) for row in range(rows) for j in rank(row)]  # (run, row) pairs, row-major
        fields = {name: None if value is None else _gather([result[name] for result in results], order)
                  for name, value in results[0].items()}
        fields["seeds"] = None if seeds is None else [seeds[j] for j, _ in order]
        output = UIP2PPipelineOutput(**fields)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def edit_sequence(self, image, instructions: list[str], reverse_instructions: list[str] | None = None,
                      **kwargs) -> UIP2PSequenceOutput:
        """Apply ``instructions`` one after another (each turn edits the previous turn's result, fed back as
        [0, 1] pixels without 8-bit rounding), then, optionally, ``reverse_instructions`` in reverse order,
        which should lead back to ``image``. ``kwargs`` go to every call (a ``generator`` is shared and continues
        from turn to turn, so one instruction reproduces a single call with the same generator)."""
        if not isinstance(instructions, list) or not instructions or not all(isinstance(i, str) for i in instructions):
            raise TypeError(f"`instructions` must be a non-empty list of str (one per turn), got {instructions!r}.")
        if reverse_instructions is not None and (not isinstance(reverse_instructions, list)
                                                 or len(reverse_instructions) != len(instructions)):
            raise ValueError(f"`reverse_instructions` must be a list with one reverse instruction per instruction "
                             f"({len(instructions)}), got {reverse_instructions!r}.")
        reserved = {"prompt", "prompt_embeds", "negative_prompt_embeds", "latents", "return_dict",
                    "reverse_instruction", "num_candidates", "seed", "return_attention_maps"} & set(kwargs)
        if reserved:
            raise ValueError(f"`edit_sequence` does not take {sorted(reserved)}: they apply to single calls.")
        image = self.normalise_image(image)
        self.check_edit_inputs(instructions[0], image, None)
        output_type = kwargs.pop("output_type", "pil")
        current, chains = image, {"forward": [], "reverse": []}
        turns = [("forward", i) for i in instructions] + [("reverse", i) for i in reversed(reverse_instructions or [])]
        for chain, instruction in turns:
            call = self._bind(instruction, current, (), {**kwargs, "output_type": "latent"})
            latents = StableDiffusionInstructPix2PixPipeline.__call__(self, **call).images
            turn, current, _ = self._decode(latents, output_type)
            chains[chain].append(turn)
        scores, reverse_images = (None, None), None
        if reverse_instructions is not None:
            reverse_images = chains["reverse"]
            input_pixels, input_latents = self._input_for_scores(image, latents.shape[0])
            scaling = self.vae.config.scaling_factor
            scores = reversibility_scores(input_pixels, current, input_latents, latents / scaling)
        return UIP2PSequenceOutput(images=chains["forward"], reverse_images=reverse_images,
                                   reversibility_latent=scores[0], reversibility_image=scores[1])

    # ------------------------------------------------------------------ helpers

    def _bind(self, prompt, image, args, kwargs) -> dict:
        """The parent call's arguments by name, defaults filled in."""
        bound = _PARENT_CALL.bind(self, prompt, image, *args, **kwargs)
        bound.apply_defaults()
        call = {name: value for name, value in bound.arguments.items() if name not in ("self", "kwargs")}
        return {**call, **bound.arguments["kwargs"]}

    @staticmethod
    def _candidate_runs(num_candidates: int, seed: int | None, generator):
        """The generator of each run and the seeds (None when the caller's generator is used as is)."""
        if num_candidates == 1 and seed is None:
            return [generator], None
        if seed is not None:
            seeds = [seed + j for j in range(num_candidates)]
        else:
            device = generator.device if generator is not None else "cpu"
            seeds = torch.randint(0, MAX_SEED, (num_candidates,), generator=generator, device=device).tolist()
        return [torch.Generator().manual_seed(s) for s in seeds], seeds

    def _input_for_scores(self, image, rows: int):
        """[0, 1] pixels and VAE latents of the input per output row (row r is conditioned on image r % n)."""
        pixels = self.image_processor.preprocess(image).to(self._execution_device, self.vae.dtype)
        index = [r % pixels.shape[0] for r in range(rows)]
        return (pixels[index].float() / 2 + 0.5).clamp(0, 1), self.vae.encode(pixels).latent_dist.mode()[index]

    def _decode(self, latents: torch.Tensor, output_type: str):
        """(images as ``output_type``, [0, 1] pixels, nsfw flags), with the parent's decoding operations."""
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype
        decoded, nsfw = self.run_safety_checker(decoded, self._execution_device, dtype)
        pixels = self.image_processor.postprocess(decoded, output_type="pt")
        if output_type == "latent":
            return latents, pixels, None
        denormalize = [True] * decoded.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
        return self.image_processor.postprocess(decoded, output_type, do_denormalize=denormalize), pixels, nsfw

    def _edit_with_maps(self, call: dict, rows: int, row_prompts: list[str]):
        """The forward edit, cross-attention recorded. IP2P's guided batch is [text+image, image-only, uncond]
        rows, not the controller's [uncond, cond]: declared as 3·rows prompts without guidance, row r (< rows) is
        the text-conditioned row of image r."""
        guided = call["guidance_scale"] > 1.0 and call["image_guidance_scale"] >= 1.0
        controller = AttentionController().configure(3 * rows if guided else rows, False)
        store, calls = AttentionStore(controller), [0]

        def advance(module, args):  # one UNet call per scheduler timestep; the parent's loop has no hook
            steps = len(self.scheduler.timesteps)
            controller.set_step(min(calls[0], steps - 1), steps)
            calls[0] += 1

        hook = self.unet.register_forward_pre_hook(advance)
        try:
            with attention_control(self.unet, controller):
                latents = StableDiffusionInstructPix2PixPipeline.__call__(self, **call).images
        finally:
            hook.remove()
        maps = [store.token_maps(self.tokenizer, text, prompt_index=r) for r, text in enumerate(row_prompts)]
        return latents, maps
