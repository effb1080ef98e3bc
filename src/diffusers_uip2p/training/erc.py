"""One training step of UIP2P with the Edit Reversibility Constraint (Algorithm 1), and the supervised
InstructPix2Pix step it replaces.

An InstructPix2Pix UNet takes the noisy latents concatenated with the input image's latents (8 channels) and
the instruction's text embeddings. ERC needs no edited image: the model edits the input with the forward
instruction (lines 2–4), edits its own result back with the reverse instruction (lines 6–8), and the losses of
`losses.py` tie the input, the edit and the reconstruction together (line 10).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..attention import AttentionController, AttentionStore, attention_control
from .encoded_records import EncodedRecords, posterior_mode
from .losses import (
    CLIPEmbedder,
    ERCLossWeights,
    attention_consistency_loss,
    clip_similarity_loss,
    directional_clip_loss,
    instruction_token_mask,
    min_snr_weights,
    reconstruction_loss,
)


@dataclass
class ERCConfig:
    """What Algorithm 1 leaves open, with our defaults.

    Args:
        weights: λ of each loss.
        min_timestep, max_timestep: the range t and t̂ are drawn from (uniformly, independently), and the
            supervised loss's t. The whole training range by default: at inference the edit starts from pure
            noise. The denoising anchor always draws from the whole range.
        num_edit_steps: DDIM steps from t (and t̂) to 0 that make I_e (and I_r); 1 is the one-step x0
            prediction, more steps cost as many UNet calls, all kept in the graph ("Unified Prediction with
            Varying Diffusion Steps").
        attention_resolutions: cross-attention resolutions L_attn compares (`LayerInfo.resolution`); None:
            the two lowest that have cross-attention (8 and 16 for SD 1.x at 512 px).
        conditioning_dropout_prob: InstructPix2Pix's dropout for classifier-free guidance: with r ~ U(0, 1),
            the text is dropped when r < 2p and the image when p ≤ r < 3p. The paper is silent on it under ERC;
            we keep it so that text and image guidance work as in IP2P.
        snr_gamma: Min-SNR-γ weighting of the denoising losses (supervised IP2P's, and ERC's anchor); 0 is
            the plain ε-MSE of InstructPix2Pix.
    """

    weights: ERCLossWeights = field(default_factory=ERCLossWeights)
    min_timestep: int = 0
    max_timestep: int = 999
    num_edit_steps: int = 1
    attention_resolutions: tuple[int, ...] | None = None
    conditioning_dropout_prob: float = 0.05
    snr_gamma: float = 5.0

    def __post_init__(self):
        if not 0 <= self.min_timestep <= self.max_timestep:
            raise ValueError(f"Need 0 <= min_timestep <= max_timestep, got {self.min_timestep}, {self.max_timestep}.")
        if self.num_edit_steps < 1:
            raise ValueError(f"`num_edit_steps` must be >= 1, got {self.num_edit_steps}.")
        if not 0 <= self.conditioning_dropout_prob <= 1 / 3:
            raise ValueError("`conditioning_dropout_prob` must be in [0, 1/3] (three dropout cases of p each), got "
                             f"{self.conditioning_dropout_prob}.")
        if not self.snr_gamma >= 0:
            raise ValueError(f"`snr_gamma` must be >= 0 (0 turns Min-SNR weighting off), got {self.snr_gamma}.")


@dataclass
class ERCOutput:
    """The step's total loss (with its graph), each term, and the edit and reconstruction (detached, [-1, 1])."""

    loss: torch.Tensor
    losses: dict[str, float]
    edited_pixels: torch.Tensor
    reconstructed_pixels: torch.Tensor


@dataclass
class EditModels:
    """The frozen parts around the trained UNet."""

    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object
    clip: CLIPEmbedder | None = None
    encoded: EncodedRecords | None = None  # the records' latents, encoded before training (encoded_records.py)

    @classmethod
    def from_pipeline(cls, pipe, clip: CLIPEmbedder | None = None) -> EditModels:
        """The frozen parts of a loaded pipeline, with a DDPM noise scheduler on its schedule's config."""
        return cls(pipe.vae.eval(), pipe.text_encoder.eval(), pipe.tokenizer,
                   DDPMScheduler.from_config(pipe.scheduler.config), clip)

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings as Stable Diffusion makes them, and the word-token mask of each prompt."""
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        device = self.text_encoder.device
        with torch.no_grad():
            embeddings = self.text_encoder(tokens.input_ids.to(device))[0]
        return embeddings, instruction_token_mask(tokens.input_ids, tokens.attention_mask).to(device)

    @functools.cached_property
    def null_text(self) -> torch.Tensor:
        """The embedding of "", which conditioning dropout puts in place of a prompt (the same every step)."""
        return self.encode_text([""])[0]

    def image_condition(self, pixels: torch.Tensor) -> torch.Tensor:
        return posterior_mode(self.vae, pixels)

    def latents_of(self, batch: dict, key: str) -> torch.Tensor:
        """`image_condition` of ``batch[key]``, read from `encoded` when the run has it."""
        if self.encoded is None:
            return self.image_condition(batch[key])
        return self.encoded.latents(batch, key, self.image_condition)

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor


def drop_conditioning(text: torch.Tensor, image: torch.Tensor, null_text: torch.Tensor, prob: float,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructPix2Pix's conditioning dropout: text → "" for r < 2p, image → 0 for p ≤ r < 3p (so 5 % text
    only, 5 % both, 5 % image only at p = 0.05). Teaches the unconditional branches that guidance needs."""
    if not prob:
        return text, image
    r = torch.rand(len(text), generator=generator, device=generator.device if generator else "cpu").to(text.device)
    text = torch.where((r < 2 * prob)[:, None, None], null_text.to(text.dtype), text)
    image = image * ~((r >= prob) & (r < 3 * prob))[:, None, None, None]
    return text, image


def _alpha_bar(noise_scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    alphas = noise_scheduler.alphas_cumprod.to(like.device)[timesteps.clamp_min(0)]
    alphas = torch.where(timesteps < 0, torch.ones_like(alphas), alphas)  # "t = -1": the clean end of DDIM
    return alphas.to(like.dtype).view(-1, 1, 1, 1)


def predict_clean(model_output: torch.Tensor, noisy: torch.Tensor, alpha_bar: torch.Tensor,
                  prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, ε) from the model's output in any of diffusers' three parameterisations."""
    sigma = (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (noisy - sigma * model_output) / alpha_bar.sqrt(), model_output
    if prediction_type == "v_prediction":
        clean = alpha_bar.sqrt() * noisy - sigma * model_output
        return clean, sigma * noisy + alpha_bar.sqrt() * model_output
    if prediction_type == "sample":
        return model_output, (noisy - alpha_bar.sqrt() * model_output) / sigma
    raise ValueError(f"Unsupported prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample.")


def denoise(unet, noisy: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor, text: torch.Tensor,
            noise_scheduler, num_steps: int) -> torch.Tensor:
    """"Apply" of Algorithm 1: the clean latents the model predicts from ``noisy`` at ``timesteps``, in
    ``num_steps`` deterministic DDIM steps (1: the one-step x0 prediction), with gradients."""
    prediction_type = noise_scheduler.config.prediction_type
    fractions = torch.linspace(1, 0, num_steps + 1, device=noisy.device)
    latents = noisy
    for i in range(num_steps):
        t = (timesteps * fractions[i]).round().long()
        previous = (timesteps * fractions[i + 1]).round().long() if i + 1 < num_steps else torch.full_like(t, -1)
        output = unet(torch.cat([latents, image], dim=1), t, encoder_hidden_states=text).sample
        clean, noise = predict_clean(output, latents, _alpha_bar(noise_scheduler, t, latents), prediction_type)
        alpha_previous = _alpha_bar(noise_scheduler, previous, latents)
        latents = alpha_previous.sqrt() * clean + (1 - alpha_previous).sqrt() * noise
    return latents


class AttentionRecorder:
    """Records the UNet's cross-attention with gradients, for L_attn (A_f and A_r of Algorithm 1).

    Install it once around the whole training loop (``with AttentionRecorder(unet) as recorder:``), not
    around each step: with gradient checkpointing the backward pass re-runs the attention layers, and they
    must run the processors the forward pass ran.
    """

    def __init__(self, unet, resolutions: tuple[int, ...] | None = None):
        self.unet = getattr(unet, "module", unet)
        self.controller = AttentionController()
        self.store = AttentionStore(self.controller, resolutions=resolutions, with_grad=True)
        self._installed = None

    def __enter__(self) -> AttentionRecorder:
        self._installed = attention_control(self.unet, self.controller)
        self._installed.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.store.reset()
        installed, self._installed = self._installed, None
        return installed.__exit__(*exc_info)

    @contextlib.contextmanager
    def suspended(self):
        """The UNet's own processors for a while (e.g. to sample validation images mid-training)."""
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()

    def start(self, batch_size: int) -> None:
        """Forget earlier maps; the next UNet calls (one pass of the ERC step) are recorded."""
        self.store.reset()
        self.controller.configure(num_prompts=batch_size, do_classifier_free_guidance=False)

    def maps(self, batch_size: int) -> torch.Tensor:
        """Maps since `start`, averaged over layers and calls, each resolution resized to the largest: [B, H, W, K]."""
        store = self.store
        resolutions = sorted({store.layers[name].resolution for name, _ in store.maps()}, reverse=True)
        if not resolutions:
            raise ValueError("No cross-attention maps were recorded: check `attention_resolutions` against the UNet.")
        maps = [store.aggregate(resolution, rows=range(batch_size)) for resolution in resolutions]
        height, width = maps[0].shape[1:3]
        resized = [F.interpolate(m.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
                   .permute(0, 2, 3, 1) for m in maps]
        return torch.stack(resized).mean(dim=0)


def erc_step(unet, models: EditModels, batch: dict, config: ERCConfig, generator: torch.Generator | None = None,
             recorder: AttentionRecorder | None = None) -> ERCOutput:
    """Algorithm 1 for one batch: forward edit, reverse edit, L_ERC. Only ``unet`` should require grad.

    ``batch`` holds ``pixel_values`` ([-1, 1], [B, 3, H, W]) and the lists ``input_caption``,
    ``edit_instruction``, ``edited_caption``, ``reverse_instruction``. ``unet`` may be wrapped (DDP).
    ``recorder``: an installed `AttentionRecorder` (needed with gradient checkpointing); without one, a
    recorder is installed for this step only.
    """
    if models.clip is None:
        raise ValueError("ERC needs a CLIP for L_CLIP, L_sim and L_recon: set `models.clip`.")
    weights, scheduler = config.weights, models.noise_scheduler
    if weights.attn and recorder is None:
        if getattr(unet, "module", unet).is_gradient_checkpointing:
            raise ValueError("With gradient checkpointing, install the `AttentionRecorder` for the whole training "
                             "loop and pass it as `recorder`: the backward pass re-runs attention layers.")
        with AttentionRecorder(unet, config.attention_resolutions) as recorder:
            return erc_step(unet, models, batch, config, generator, recorder)
    input_pixels = batch["pixel_values"]
    size, device = len(input_pixels), input_pixels.device
    input_condition = models.latents_of(batch, "pixel_values")
    latents = input_condition * models.scaling_factor
    forward_text, forward_tokens = models.encode_text(batch["edit_instruction"])
    reverse_text, reverse_tokens = models.encode_text(batch["reverse_instruction"])
    forward_text, input_condition = drop_conditioning(forward_text, input_condition, models.null_text,
                                                      config.conditioning_dropout_prob, generator)

    def draw_timesteps():
        return torch.randint(config.min_timestep, config.max_timestep + 1, (size,), generator=generator,
                             device=generator.device if generator else "cpu").to(device)

    def noised(clean, timesteps):  # N(·, t)
        noise = torch.randn(clean.shape, generator=generator, device=generator.device if generator else "cpu")
        return scheduler.add_noise(clean, noise.to(device, clean.dtype), timesteps)

    # Forward process (lines 2–4): noise the input, let M predict the noise given I_i and F, recover I_e.
    if weights.attn:
        recorder.start(size)
    t = draw_timesteps()
    edited_latents = denoise(unet, noised(latents, t), t, input_condition, forward_text, scheduler,
                             config.num_edit_steps)
    forward_maps = recorder.maps(size) if weights.attn else None
    # Reverse process (lines 6–8): noise I_e, let M predict the noise given I_e and R, recover I_r.
    if weights.attn:
        recorder.start(size)
    t_hat = draw_timesteps()
    reverse_text, edited_condition = drop_conditioning(reverse_text, edited_latents / models.scaling_factor,
                                                       models.null_text, config.conditioning_dropout_prob, generator)
    reconstructed_latents = denoise(unet, noised(edited_latents, t_hat), t_hat, edited_condition, reverse_text,
                                    scheduler, config.num_edit_steps)
    reverse_maps = recorder.maps(size) if weights.attn else None

    # Decode with gradients (the VAE's weights stay frozen).
    vae = models.vae
    edited_pixels = vae.decode((edited_latents / models.scaling_factor).to(vae.dtype)).sample.float()
    reconstructed_pixels = vae.decode((reconstructed_latents / models.scaling_factor).to(vae.dtype)).sample.float()

    # L_ERC (line 10).
    clip = models.clip
    with torch.no_grad():
        input_image = clip.embed_images(input_pixels)
    edited_image, reconstructed_image = clip.embed_images(edited_pixels), clip.embed_images(reconstructed_pixels)
    input_text, edited_text = clip.embed_texts(batch["input_caption"]), clip.embed_texts(batch["edited_caption"])
    terms = {
        "clip": directional_clip_loss(input_image, edited_image, input_text, edited_text),
        "sim": clip_similarity_loss(edited_image, edited_text),
        "recon": reconstruction_loss(input_pixels, reconstructed_pixels, input_image, reconstructed_image,
                                     weights.recon_clip),
    }
    if weights.attn:
        terms["attn"] = attention_consistency_loss(forward_maps, forward_tokens, reverse_maps, reverse_tokens)
    if weights.denoise:
        # Our addition to Algorithm 1: its one-step losses never ask M to stay a denoiser, and multi-step
        # sampling drifts (ε-MSE 50× the base's). Denoise the input under its own caption, no image:
        # the base's text-to-image task, on what ERC may see. At every t, whatever range the edits draw from:
        # sampling passes through all of them.
        caption_text, _ = models.encode_text(batch["input_caption"])
        every_t = (0, scheduler.config.num_train_timesteps - 1)
        terms["denoise"] = denoising_loss(unet, models, latents, torch.zeros_like(latents), caption_text, config, generator,
                                          every_t)
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    return ERCOutput(loss=loss, losses={name: value.item() for name, value in terms.items()},
                     edited_pixels=edited_pixels.detach(), reconstructed_pixels=reconstructed_pixels.detach())


def denoising_loss(unet, models: EditModels, clean_latents: torch.Tensor, image: torch.Tensor, text: torch.Tensor,
                   config: ERCConfig, generator: torch.Generator | None = None,
                   timestep_range: tuple[int, int] | None = None) -> torch.Tensor:
    """The diffusion loss of an InstructPix2Pix UNet: noise ``clean_latents`` (scaled) at t ~ U[min, max] (the
    config's, or ``timestep_range``), predict the noise (or v) given the ``image`` latents and ``text``; the
    per-sample MSE, Min-SNR-γ weighted."""
    scheduler = models.noise_scheduler
    device, sample_device = clean_latents.device, generator.device if generator else "cpu"
    noise = torch.randn(clean_latents.shape, generator=generator, device=sample_device).to(device)
    low, high = timestep_range or (config.min_timestep, config.max_timestep)
    timesteps = torch.randint(low, high + 1, (len(clean_latents),), generator=generator,
                              device=sample_device).to(device)
    noisy = scheduler.add_noise(clean_latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    target = scheduler.get_velocity(clean_latents, noise, timesteps) if prediction_type == "v_prediction" else noise
    output = unet(torch.cat([noisy, image], dim=1), timesteps, encoder_hidden_states=text).sample
    error = (output.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    weights = min_snr_weights(_alpha_bar(scheduler, timesteps, error).flatten(), config.snr_gamma, prediction_type)
    return (error * weights).mean()


def supervised_step(unet, models: EditModels, batch: dict, config: ERCConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """InstructPix2Pix's loss, the supervised baseline: denoise the *true* edited image's latents given the
    input image and the instruction (`denoising_loss`). Needs ``batch["edited_pixel_values"]``."""
    if "edited_pixel_values" not in batch:
        raise ValueError("Supervised training needs edited images (`edited_pixel_values`); use ERC without them.")
    with torch.no_grad():  # the posterior mode, as the input condition and ERC use (see `image_condition`)
        target_latents = models.latents_of(batch, "edited_pixel_values") * models.scaling_factor
    text, _ = models.encode_text(batch["edit_instruction"])
    text, image = drop_conditioning(text, models.latents_of(batch, "pixel_values"), models.null_text,
                                    config.conditioning_dropout_prob, generator)
    return denoising_loss(unet, models, target_latents, image, text, config, generator)
