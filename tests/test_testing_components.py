"""The offline components themselves: tokenizer, tiny sets in stock diffusers pipelines, real-size configs."""

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from diffusers_uip2p.testing import (
    clip_vit_l14_text_config,
    make_clip_tokenizer,
    sd15_unet_config,
    sd15_vae_config,
    tiny_instruct_pix2pix_components,
)


def test_tokenizer_is_byte_level_and_lossless(tmp_path):
    tokenizer = make_clip_tokenizer()
    text = "turn the café's 2 dogs into cats! ✨"
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.split() != [] and "".join(decoded.split()) == "".join(text.lower().split())  # CLIP re-spaces
    padded = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and max(padded) < 1000
    tokenizer.save_pretrained(tmp_path)
    assert type(tokenizer).from_pretrained(tmp_path)(text).input_ids == ids


def test_merges_shorten_words():
    plain, merged = make_clip_tokenizer(), make_clip_tokenizer(merges=[("t", "h"), ("th", "e</w>")])
    assert len(merged("the").input_ids) < len(plain("the").input_ids)


def test_instruct_pix2pix_set_runs_in_the_stock_pipeline(rgb_image):
    components = tiny_instruct_pix2pix_components()
    assert components["unet"].config.in_channels == 8
    pipe = StableDiffusionInstructPix2PixPipeline(**components, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("make it blue", image=rgb_image, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_sd15_architecture_sizes():
    """Parameter counts of the real architectures (built on the meta device: no memory, no download)."""
    with init_empty_weights():
        unet = UNet2DConditionModel(**sd15_unet_config())
        ip2p_unet = UNet2DConditionModel(**sd15_unet_config(in_channels=8))
        vae = AutoencoderKL(**sd15_vae_config())
        text_encoder = CLIPTextModel(clip_vit_l14_text_config(make_clip_tokenizer()))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 859_520_964
    assert count(ip2p_unet) - count(unet) == 4 * 320 * 3 * 3
    assert count(vae) == 83_653_863
    assert count(text_encoder) == 123_060_480
