"""Turn a Stable Diffusion text-to-image checkpoint into an InstructPix2Pix (and so UIP2P) starting point.

InstructPix2Pix (and UIP2P, which keeps its architecture) conditions the UNet on the input image by
concatenating the image's VAE latents to the noisy latents: the UNet takes 8 input channels instead of 4.
Training starts from a text-to-image UNet whose ``conv_in`` is widened, with the weights of the 4 new input
channels set to zero, so that before any training the model ignores the image and behaves exactly as the
text-to-image model did (InstructPix2Pix's ``init_from_ckpt``; diffusers' ``train_instruct_pix2pix.py``).
"""

import os

import torch
from diffusers import (
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

from ..schedulers import scheduler_from_config


def convert_unet_to_instruct_pix2pix(unet: UNet2DConditionModel, image_channels: int | None = None
                                     ) -> UNet2DConditionModel:
    """A new UNet with ``in_channels + image_channels`` input channels: the new channels' ``conv_in`` weights
    are zero, every other weight (and the config) is copied from ``unet``, which is left untouched.

    Fed zero image latents (or any image latents, before training), the result computes what ``unet`` computes:
    the extra channels only add products with zero weights.

    Args:
        unet: a text-to-image ``UNet2DConditionModel`` (4 input channels for Stable Diffusion 1.x/2.x).
        image_channels: channels of the image conditioning; default: the UNet's own ``in_channels``
            (InstructPix2Pix concatenates latents of the same shape).
    """
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"`unet` must be a UNet2DConditionModel, got {type(unet).__name__}.")
    in_channels = unet.config.in_channels
    image_channels = in_channels if image_channels is None else image_channels
    if isinstance(image_channels, bool) or not isinstance(image_channels, int) or image_channels < 1:
        raise ValueError(f"`image_channels` must be a positive int, got {image_channels!r}.")
    if in_channels != unet.config.out_channels:
        raise ValueError(
            f"`unet` has {in_channels} input but {unet.config.out_channels} output channels: it already takes extra "
            "conditioning channels (an InstructPix2Pix UNet?), so it is not a text-to-image UNet to convert."
        )
    # Build on the meta device (no random initialisation of ~860M parameters), then assign copies.
    with torch.device("meta"):
        converted = type(unet).from_config(unet.config, in_channels=in_channels + image_channels)
    state = {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}
    old = state["conv_in.weight"]
    widened = torch.zeros(old.shape[0], in_channels + image_channels, *old.shape[2:], dtype=old.dtype,
                          device=old.device)
    widened[:, :in_channels] = old
    state["conv_in.weight"] = widened
    converted.load_state_dict(state, strict=True, assign=True)
    left_on_meta = [name for name, t in [*converted.named_parameters(), *converted.named_buffers()] if t.is_meta]
    if left_on_meta:  # a buffer outside the state dict (none in diffusers 0.42): fall back to a real init
        converted = type(unet).from_config(unet.config, in_channels=in_channels + image_channels)
        converted.load_state_dict(state, strict=True)
    return converted.train(unet.training)  # the copies keep the source's device and dtype


def convert_pipeline_folder(src: str | os.PathLike, dst: str | os.PathLike,
                            pipeline_class: type = StableDiffusionInstructPix2PixPipeline,
                            euler_ancestral: bool = True, **load_kwargs) -> StableDiffusionInstructPix2PixPipeline:
    """Load a text-to-image pipeline folder (or Hub id) and save an InstructPix2Pix/UIP2P pipeline folder at
    ``dst`` (safetensors): the converted UNet, the same VAE, text encoder, tokenizer and safety checker.

    Args:
        src: a diffusers Stable Diffusion folder (``model_index.json`` with a 4-channel ``unet``).
        dst: output folder; it loads with ``UIP2PPipeline.from_pretrained(dst)`` and, with the default
            ``pipeline_class``, also with ``DiffusionPipeline.from_pretrained(dst)`` (diffusers resolves a
            folder's ``_class_name`` only among its own pipelines, and a UIP2P checkpoint runs exactly like an
            IP2P one). Pass ``pipeline_class=UIP2PPipeline`` to record that class instead.
        euler_ancestral: switch the scheduler to ``EulerAncestralDiscreteScheduler`` (from the source's config),
            the sampler InstructPix2Pix uses; False keeps the source's scheduler.
        load_kwargs: passed to ``StableDiffusionPipeline.from_pretrained`` (e.g. ``torch_dtype``).

    Returns the converted pipeline (its UNet untrained for the image channels: edits are only meaningful after
    InstructPix2Pix/UIP2P training).
    """
    source = StableDiffusionPipeline.from_pretrained(src, **load_kwargs)
    scheduler = source.scheduler
    if euler_ancestral:
        scheduler = scheduler_from_config(EulerAncestralDiscreteScheduler, scheduler.config)
    pipe = pipeline_class(
        vae=source.vae, text_encoder=source.text_encoder, tokenizer=source.tokenizer,
        unet=convert_unet_to_instruct_pix2pix(source.unet), scheduler=scheduler,
        safety_checker=source.safety_checker, feature_extractor=source.feature_extractor,
        requires_safety_checker=bool(source.config.get("requires_safety_checker", True)),
    )
    pipe.save_pretrained(dst, safe_serialization=True)
    return pipe
