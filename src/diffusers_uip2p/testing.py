"""Tiny, offline components for tests and benchmarks, and the real architectures with random weights.

Nothing here touches the network: the CLIP tokenizer is a byte-level BPE built in code (every string
encodes without unknown tokens), and every model is constructed from a config with a fixed seed.
`forbid_network` turns any attempt to leave the machine into an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .byte_tokenizer import make_clip_tokenizer  # noqa: F401  (re-exported: the test components build on it)
from .schedulers import DualScheduleInversionScheduler

# Scheduler configs as Stable Diffusion checkpoints ship them (scheduler/scheduler_config.json).
SD15_SCHEDULER_CONFIG = {  # runwayml/stable-diffusion-v1-5, PNDM
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
SD21_SCHEDULER_CONFIG = {  # stabilityai/stable-diffusion-2-1, DDIM with v-prediction
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
IP2P_SCHEDULER_CONFIG = {  # timbrooks/instruct-pix2pix, Euler ancestral
    "_class_name": "EulerAncestralDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
    "trained_betas": None,
}


# Models are returned in eval mode, as `from_pretrained` returns them: train mode changes kernel rounding.


def _tiny_unet(in_channels: int, cross_attention_dim: int, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=8,
    ).eval()


def _tiny_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
    ).eval()


def _tiny_text_encoder(tokenizer: CLIPTokenizer, hidden_size: int, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=hidden_size, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=max(1000, len(tokenizer)), max_position_embeddings=77,
    )).eval()


def tiny_text_to_image_components(seed: int = 0, prediction_type: str = "epsilon") -> dict:
    """vae, text_encoder, tokenizer, unet (4 input channels) and a DualScheduleInversionScheduler.

    The VAE downsamples by 2, so a 16×16 image has 8×8 latents. Runs a 2-step pipeline in well under a
    second on a CPU.
    """
    tokenizer = make_clip_tokenizer()
    return {
        "vae": _tiny_vae(seed),
        "text_encoder": _tiny_text_encoder(tokenizer, 32, seed),
        "tokenizer": tokenizer,
        "unet": _tiny_unet(4, 32, seed),
        "scheduler": DualScheduleInversionScheduler.from_config(SD15_SCHEDULER_CONFIG, prediction_type=prediction_type),
    }


def tiny_instruct_pix2pix_components(seed: int = 0) -> dict:
    """The InstructPix2Pix set: like the text-to-image set, with an 8-channel UNet and IP2P's scheduler."""
    from diffusers import EulerAncestralDiscreteScheduler

    components = tiny_text_to_image_components(seed)
    components["unet"] = _tiny_unet(8, 32, seed)
    components["scheduler"] = EulerAncestralDiscreteScheduler.from_config(IP2P_SCHEDULER_CONFIG)
    return components


def sd15_unet_config(in_channels: int = 4) -> dict:
    """Stable Diffusion 1.5's UNet (859.5M parameters); ``in_channels=8`` is InstructPix2Pix's."""
    return {
        "sample_size": 64, "in_channels": in_channels, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    }


def sd15_vae_config() -> dict:
    """Stable Diffusion 1.5's VAE (83.7M parameters, downsampling by 8)."""
    return {
        "sample_size": 512, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215,
    }


def clip_vit_l14_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """CLIP ViT-L/14's text tower (123.1M parameters), SD 1.x's text encoder."""
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def sd15_components(seed: int = 0, in_channels: int = 4, dtype: torch.dtype = torch.float32) -> dict:
    """Stable Diffusion 1.5's architecture with random weights, for benchmarks at real size.
    ``in_channels=8`` gives InstructPix2Pix's UNet. Allocates about 4 GiB in float32."""
    tokenizer = make_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_unet_config(in_channels))
    torch.manual_seed(seed)
    vae = AutoencoderKL(**sd15_vae_config())
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(clip_vit_l14_text_config(tokenizer))
    return {
        "vae": vae.to(dtype).eval(), "text_encoder": text_encoder.to(dtype).eval(), "tokenizer": tokenizer,
        "unet": unet.to(dtype).eval(),
        "scheduler": DualScheduleInversionScheduler.from_config(SD15_SCHEDULER_CONFIG),
    }


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def forbid_network():
    """Inside this block, connecting a socket anywhere but loopback (or a Unix socket) raises."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock, address):
        if sock.family != getattr(socket, "AF_UNIX", None) and not _is_loopback(address):
            raise RuntimeError(f"Network access is forbidden here (tried to connect to {address!r}).")

    def connect(sock, address):
        guard(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock, address):
        guard(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex


def word_class_text_encoder(words_by_class: dict[str, list[str]], hidden_size: int = 32, seed: int = 0,
                            class_weight: float = 1.0, class_groups: dict[str, str] | None = None
                            ) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """A tiny text encoder that knows what kind of thing each word names, and its tokenizer.

    A real CLIP knows from pretraining that "zebra" is an animal and "ink illustration" a style; a random
    tiny one knows nothing, so nothing trained on its embeddings can generalise to words it never saw.
    This one stands in for that knowledge: every word in ``words_by_class`` is one token whose embedding is
    its own random vector plus a random prototype of its class (the mean of the prototypes, for a word in
    several classes). The transformer layers stay random; they keep the class signal (a linear probe on
    their output tells the class of words it never saw 98.6 % of the time).

    ``class_groups`` maps a class to a broader kind it belongs to, the next rung of the hierarchy a real
    CLIP also knows (a tunnel and a kitchen are both places, a taxi and a kettle both things); a grouped
    class's prototype is then (own prototype + the kind's prototype) / √2, so classes of one kind resemble
    each other and the semantic part keeps its size. Without groups every class is unrelated to every other,
    and a model can learn nothing about a class from the others: "on a highway" → "in a tunnel" is then as
    far from "in a park" → "in a kitchen" as from a change of animal. `diffusers_uip2p.classifier.triples`
    gives the generated triples' kinds (`class_groups`); neither argument says anything about edit tasks.
    Used to test that the task classifier learns from the templates' structure and generalises to unseen
    words and phrasings.
    """
    from .shapes.tokenizer import merges_for

    classes: dict[str, list[str]] = {}
    for name, words in words_by_class.items():
        for word in words:
            classes.setdefault(word, []).append(name)
    tokenizer = make_clip_tokenizer(merges=merges_for(sorted(classes)))
    encoder = _tiny_text_encoder(tokenizer, hidden_size, seed)
    generator = torch.Generator().manual_seed(seed)
    prototypes = {name: torch.randn(hidden_size, generator=generator) for name in words_by_class}
    if class_groups:
        unknown = sorted(set(class_groups) - set(words_by_class))
        if unknown:
            raise ValueError(f"`class_groups` names classes that `words_by_class` lacks: {unknown}.")
        kinds = {kind: torch.randn(hidden_size, generator=generator) for kind in sorted(set(class_groups.values()))}
        prototypes = {name: (vector + kinds[class_groups[name]]) / 2 ** 0.5 if name in class_groups else vector
                      for name, vector in prototypes.items()}
    embedding = encoder.get_input_embeddings().weight
    with torch.no_grad():
        for word, names in classes.items():
            prototype = torch.stack([prototypes[name] for name in names]).mean(0)
            own = torch.randn(hidden_size, generator=generator)
            embedding[tokenizer.convert_tokens_to_ids(word + "</w>")] = own + class_weight * prototype
    return encoder, tokenizer


def tiny_clip_model(image_size: int = 32, seed: int = 0):
    """A tiny random ``CLIPModel`` (text and image towers, projection 16) and its tokenizer, for the ERC
    losses and CLIP metrics in tests."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = make_clip_tokenizer()
    text = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "hidden_size": 32, "intermediate_size": 37,
            "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": max(1000, len(tokenizer)),
            "max_position_embeddings": 77}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
              "image_size": image_size, "patch_size": 8}
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval(), tokenizer


def clip_vit_l14_model(seed: int = 0):
    """CLIP ViT-L/14's architecture (427.6M parameters: the text tower of `clip_vit_l14_text_config`, a
    24-layer, 1024-wide vision tower on 224×224 images in 14×14 patches, projection 768) with random weights,
    and the byte-level tokenizer: the loss CLIP of ERC training at real size, for benchmarks."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = make_clip_tokenizer()
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
              "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu", "projection_dim": 768}
    config = CLIPConfig(text_config=clip_vit_l14_text_config(tokenizer).to_dict(), vision_config=vision,
                        projection_dim=768)
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), tokenizer


def tiny_causal_lm(seed: int = 0):
    """A tiny random GPT-2 and a byte-level tokenizer: a local "LLM" for the data-generation paths, which
    writes nonsense but exercises prompting, generation and parsing end to end."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_clip_tokenizer(model_max_length=4096)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=2048, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval(), tokenizer
