"""The four losses of the Edit Reversibility Constraint (UIP2P supplement §4.1 and Algorithm 1, §9.3).

Notation follows Algorithm 1: I_i the input image, I_e the forward edit, I_r the reconstruction made by the
reverse edit, T_i the input caption, T_e the edited caption, A_f / A_r the forward / reverse cross-attention
maps. E_I and E_T are a frozen CLIP's unit-norm image and text embeddings.

The main paper (with the exact formulas and weights) is not available to us; each formula below is our reading
of the supplement and of the StyleGAN-NADA loss it adopts (supplement §9.2). Every weight is an argument of
`train_uip2p`, and `ERCLossWeights` documents the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..evaluation.clip_features import clip_image_embeddings, clip_text_embeddings

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ERCLossWeights:
    """λ of each loss in L_ERC = λ_clip·L_CLIP + λ_sim·L_sim + λ_recon·L_recon + λ_attn·L_attn, plus our
    λ_denoise·L_denoise.

    The paper does not state its weights. The defaults weigh every loss equally, L_recon's CLIP term
    included, which keeps the four terms at similar sizes (each lies in [0, 2]) at the start of training.
    ``denoise`` weighs our addition to the paper, the denoising anchor (`erc.erc_step`); its default 0 is
    the paper's L_ERC (`train_uip2p` turns it on).
    """

    clip: float = 1.0
    sim: float = 1.0
    recon: float = 1.0
    recon_clip: float = 1.0
    attn: float = 1.0
    denoise: float = 0.0

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"The loss weight `{name}` must be a number >= 0, got {value!r}.")


class CLIPEmbedder(torch.nn.Module):
    """A frozen transformers ``CLIPModel`` that embeds images *with gradients*, so the losses reach the UNet.

    ``CLIPImageProcessor`` works on PIL images and breaks the graph; this resizes (bicubic, shorter side),
    centre-crops and normalises the [-1, 1] tensors the VAE decodes, as the processor would.

    Args:
        clip_model: any ``CLIPModel`` (ViT-B/32 or ViT-L/14 for real images, the Shapes CLIP on the Shapes world).
        tokenizer: its tokenizer.
        image_mean, image_std: the processor's normalisation; default OpenAI CLIP's.
    """

    def __init__(self, clip_model, tokenizer, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD):
        super().__init__()
        self.model = clip_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(clip_model.config.vision_config.image_size)
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [B, 3, H, W] → CLIP's input, differentiably."""
        images = (images.float() + 1) / 2
        height, width = images.shape[-2:]
        scale = self.image_size / min(height, width)
        size = (max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale)))
        if size != (height, width):
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        images = images[..., top: top + self.image_size, left: left + self.image_size]
        return (images - self.mean) / self.std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return clip_image_embeddings(self.model, self.pixel_values(images).to(self.model.dtype)).float()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings)
        tokens = tokens.to(self.mean.device)
        return clip_text_embeddings(self.model, tokens.input_ids, tokens.attention_mask).float()


def min_snr_weights(alpha_bar: torch.Tensor, gamma: float, prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023; diffusers' examples' ``--snr_gamma``), SNR = ᾱ/(1 − ᾱ):
    min(SNR, γ)/SNR for an ε-prediction loss, min(SNR, γ)/(SNR + 1) for a v-prediction loss. The many
    easy low-noise timesteps stop dominating the gradient, which converges several times faster.
    γ = 0 turns the weighting off (all ones)."""
    if not gamma:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    if prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)


def directional_clip_loss(input_image: torch.Tensor, edited_image: torch.Tensor, input_text: torch.Tensor,
                          edited_text: torch.Tensor) -> torch.Tensor:
    """L_CLIP = 1 − cos(ΔI, ΔT), ΔI = E_I(I_e) − E_I(I_i), ΔT = E_T(T_e) − E_T(T_i) (StyleGAN-NADA's direction
    loss, captions in place of class names): the edit must move the image the way the caption moved.

    An edit that changes nothing has ΔI = 0 and scores 1, as an orthogonal edit would. Arguments are
    unit-norm embeddings [B, D]; the result is the batch mean.
    """
    image_direction = F.normalize(edited_image - input_image, dim=-1)
    text_direction = F.normalize(edited_text - input_text, dim=-1)
    return (1 - _cosine(image_direction, text_direction)).mean()


def clip_similarity_loss(edited_image: torch.Tensor, edited_text: torch.Tensor) -> torch.Tensor:
    """L_sim = 1 − cos(E_I(I_e), E_T(T_e)): the edit must show what the edited caption says (StyleGAN-NADA's
    global CLIP loss). Unlike L_CLIP it rewards the result, not the change, so it lets edits go further."""
    return (1 - _cosine(edited_image, edited_text)).mean()


def reconstruction_loss(input_pixels: torch.Tensor, reconstructed_pixels: torch.Tensor,
                        input_image: torch.Tensor, reconstructed_image: torch.Tensor,
                        clip_weight: float = 1.0) -> torch.Tensor:
    """L_recon = ‖I_r − I_i‖₁ + w·(1 − cos(E_I(I_r), E_I(I_i))): undoing the edit must give the input back,
    pixel by pixel and in meaning. Pixels in [-1, 1], the L1 is a mean over pixels and the batch."""
    pixel = (reconstructed_pixels.float() - input_pixels.float()).abs().mean()
    return pixel + clip_weight * (1 - _cosine(reconstructed_image, input_image)).mean()


def instruction_map(maps: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Where an instruction looks: cross-attention maps [B, H, W, K] averaged over the instruction's tokens
    (``token_mask`` [B, K], 1 on words, 0 on start, end and padding), normalised to mean 1 over the image so
    that only the spatial distribution counts, not how much attention the words took overall."""
    mask = token_mask.to(maps.dtype)
    if (mask.sum(dim=-1) == 0).any():
        raise ValueError("`token_mask` selects no token for some row: an empty instruction has no attention map.")
    spatial = (maps * mask[:, None, None, :]).sum(dim=-1) / mask.sum(dim=-1)[:, None, None]
    return spatial / spatial.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def attention_consistency_loss(forward_maps: torch.Tensor, forward_mask: torch.Tensor, reverse_maps: torch.Tensor,
                               reverse_mask: torch.Tensor) -> torch.Tensor:
    """L_attn = mean over pixels of (Â_f − Â_r)², Â the `instruction_map` of each pass: the forward and the
    reverse instruction name the same thing ("make the dog brown" / "make the dog white"), so they must
    attend to the same region; this keeps edits local (supplement §4.1)."""
    if forward_maps.shape[:3] != reverse_maps.shape[:3]:
        raise ValueError(f"Forward maps {tuple(forward_maps.shape)} and reverse maps {tuple(reverse_maps.shape)} "
                         "differ in batch or spatial size.")
    return F.mse_loss(instruction_map(forward_maps, forward_mask), instruction_map(reverse_maps, reverse_mask))


def instruction_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """1 on an instruction's word tokens: the tokenizer's attention mask less the start and end tokens."""
    mask = attention_mask.clone()
    mask[:, 0] = 0
    last = attention_mask.sum(dim=-1).long() - 1
    mask[torch.arange(len(mask)), last] = 0
    return mask
