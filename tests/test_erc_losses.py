"""The ERC losses against hand-computed values, and the ERC step (Algorithm 1) on tiny models."""

import math

import pytest
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
import torch
from diffusers import DDPMScheduler

from diffusers_uip2p.testing import SD15_SCHEDULER_CONFIG, tiny_clip_model, tiny_instruct_pix2pix_components
from diffusers_uip2p.training.erc import (
    EditModels,
    ERCConfig,
    denoise,
    drop_conditioning,
    erc_step,
    predict_clean,
    supervised_step,
)
from diffusers_uip2p.training.losses import (
    CLIPEmbedder,
    ERCLossWeights,
    attention_consistency_loss,
    clip_similarity_loss,
    directional_clip_loss,
    instruction_map,
    instruction_token_mask,
    min_snr_weights,
    reconstruction_loss,
)


def unit(*values):
    return torch.nn.functional.normalize(torch.tensor([values], dtype=torch.float32), dim=-1)


def test_directional_clip_loss_by_hand():
    # The image moved exactly as the caption did: ΔI ∥ ΔT, loss 0.
    assert directional_clip_loss(unit(1, 0), unit(0, 1), unit(1, 0), unit(0, 1)).item() == pytest.approx(0, abs=1e-6)
    # ΔI = (-1, 1)/√2, ΔT = (-1, -1)/√2: orthogonal, loss 1.
    assert directional_clip_loss(unit(1, 0), unit(0, 1), unit(1, 0), unit(0, -1)).item() == pytest.approx(1)
    # Opposite directions: loss 2.
    assert directional_clip_loss(unit(1, 0), unit(0, 1), unit(0, 1), unit(1, 0)).item() == pytest.approx(2)
    # No change in the image scores like an orthogonal change.
    assert directional_clip_loss(unit(1, 0), unit(1, 0), unit(1, 0), unit(0, 1)).item() == pytest.approx(1)


def test_similarity_and_reconstruction_by_hand():
    assert clip_similarity_loss(unit(1, 0), unit(0.6, 0.8)).item() == pytest.approx(0.4)
    pixels = torch.zeros(1, 3, 4, 4)
    # L1 of a uniform 0.5 error is 0.5; the CLIP term is 1 − cos = 1 − 0.6, weighted 2.
    loss = reconstruction_loss(pixels, pixels + 0.5, unit(1, 0), unit(0.6, 0.8), clip_weight=2.0)
    assert loss.item() == pytest.approx(0.5 + 2 * 0.4)


def test_attention_consistency_by_hand():
    # One row, a 2×2 map, 3 tokens of which only token 1 is a word of the instruction.
    forward = torch.zeros(1, 2, 2, 3)
    reverse = torch.zeros(1, 2, 2, 3)
    forward[0, 0, 0, 1] = 1.0
    reverse[0, 0, 1, 1] = 0.5          # the same amount of attention elsewhere; the scale must not matter
    forward[..., 0] = reverse[..., 0] = 7.0  # start token, masked out
    mask = torch.tensor([[0, 1, 0]])
    assert instruction_map(forward, mask).tolist() == [[[4.0, 0.0], [0.0, 0.0]]]
    # Normalised maps [[4, 0], [0, 0]] and [[0, 4], [0, 0]]: squared errors 16 and 16 over 4 pixels.
    assert attention_consistency_loss(forward, mask, reverse, mask).item() == pytest.approx(8.0)
    assert attention_consistency_loss(forward, mask, forward * 3, mask).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="token_mask"):
        instruction_map(forward, torch.tensor([[0, 0, 0]]))
    with pytest.raises(ValueError, match="spatial size"):
        attention_consistency_loss(forward, mask, torch.zeros(1, 4, 4, 3), mask)


def test_instruction_token_mask_drops_start_end_and_padding():
    mask = instruction_token_mask(torch.zeros(2, 6, dtype=torch.long),
                                  torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]))
    assert mask.tolist() == [[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]]


def test_loss_weights_are_checked():
    with pytest.raises(ValueError, match="attn"):
        ERCLossWeights(attn=-1)


def test_clip_embedder_matches_the_processor_and_passes_gradients():
    from transformers import CLIPImageProcessor

    clip, tokenizer = tiny_clip_model(image_size=32)
    embedder = CLIPEmbedder(clip, tokenizer)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   do_resize=False, do_center_crop=False, do_rescale=False)
    expected = processor(images=((image[0] + 1) / 2).numpy(), return_tensors="pt",
                         input_data_format="channels_first").pixel_values
    torch.testing.assert_close(embedder.pixel_values(image), expected, atol=1e-5, rtol=1e-5)
    # Resizing (a 48×64 image to a 32×32 crop) keeps the graph.
    big = torch.rand(2, 3, 48, 64, requires_grad=True)
    assert embedder.pixel_values(big).shape == (2, 3, 32, 32)
    embedder.embed_images(big).sum().backward()
    assert big.grad is not None and big.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    texts = embedder.embed_texts(["a red circle", "a blue square"])
    assert texts.shape == (2, 16) and torch.allclose(texts.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_clean_inverts_each_parameterisation(prediction_type):
    clean, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    alpha_bar = torch.tensor([0.3, 0.8]).view(2, 1, 1, 1)
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    output = {"epsilon": noise, "sample": clean,
              "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean}[prediction_type]
    got_clean, got_noise = predict_clean(output, noisy, alpha_bar, prediction_type)
    torch.testing.assert_close(got_clean, clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_noise, noise, atol=1e-5, rtol=1e-5)


def ddpm():
    return DDPMScheduler.from_config({k: v for k, v in SD15_SCHEDULER_CONFIG.items()
                                      if k not in ("_class_name", "skip_prk_steps")})


@pytest.mark.parametrize("num_steps", [1, 3])
def test_denoise_recovers_the_clean_latents_under_an_oracle(num_steps):
    """A model that knows the one clean sample predicts its exact noise; any number of DDIM steps returns it."""
    scheduler, clean = ddpm(), torch.randn(2, 4, 4, 4)

    class Oracle:
        def __call__(self, sample, t, encoder_hidden_states):
            alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
            latents = sample[:, :4]
            return type("Out", (), {"sample": (latents - alpha.sqrt() * clean) / (1 - alpha).sqrt()})

    timesteps = torch.tensor([900, 250])
    noisy = scheduler.add_noise(clean, torch.randn_like(clean), timesteps)
    result = denoise(Oracle(), noisy, timesteps, torch.zeros_like(clean), None, scheduler, num_steps)
    torch.testing.assert_close(result, clean, atol=1e-4, rtol=1e-4)


def test_conditioning_dropout_rates():
    rows = 20000
    text, image, null = torch.ones(rows, 2, 3), torch.ones(rows, 4, 2, 2), torch.zeros(1, 2, 3)
    text, image = drop_conditioning(text, image, null, 0.05, torch.Generator().manual_seed(0))
    text_dropped, image_dropped = text[:, 0, 0] == 0, image[:, 0, 0, 0] == 0
    assert math.isclose(text_dropped.float().mean().item(), 0.10, abs_tol=0.01)
    assert math.isclose(image_dropped.float().mean().item(), 0.10, abs_tol=0.01)
    assert math.isclose((text_dropped & image_dropped).float().mean().item(), 0.05, abs_tol=0.01)


def tiny_setup(seed=0):
    components = tiny_instruct_pix2pix_components(seed)
    clip, clip_tokenizer = tiny_clip_model()
    models = EditModels(components["vae"].requires_grad_(False), components["text_encoder"].requires_grad_(False),
                        components["tokenizer"], ddpm(), CLIPEmbedder(clip, clip_tokenizer))
    torch.manual_seed(seed)
    batch = {"pixel_values": torch.rand(2, 3, 16, 16) * 2 - 1, "edited_pixel_values": torch.rand(2, 3, 16, 16) * 2 - 1,
             "input_caption": ["a red circle", "a dog on a couch"], "edit_instruction": ["make it blue", "add a ball"],
             "edited_caption": ["a blue circle", "a dog on a couch with a ball"],
             "reverse_instruction": ["make it red", "remove the ball"]}
    return components["unet"].train(), models, batch


def test_erc_step_trains_the_unet_only():
    unet, models, batch = tiny_setup()
    output = erc_step(unet, models, batch, ERCConfig(num_edit_steps=2), torch.Generator().manual_seed(0))
    assert set(output.losses) == {"clip", "sim", "recon", "attn"}
    assert all(math.isfinite(v) for v in output.losses.values())
    output.loss.backward()
    grads = [p.grad for p in unet.parameters()]
    assert sum(g.abs().sum() for g in grads if g is not None) > 0
    assert unet.conv_in.weight.grad[:, 4:].abs().sum() > 0  # the image channels learn too
    frozen = [models.vae, models.text_encoder, models.clip.model]
    assert all(p.grad is None for module in frozen for p in module.parameters())


def test_erc_step_without_attention_loss_skips_capture():
    unet, models, batch = tiny_setup()
    weights = ERCLossWeights(attn=0)
    output = erc_step(unet, models, batch, ERCConfig(weights=weights), torch.Generator().manual_seed(0))
    assert "attn" not in output.losses
    total = weights.clip * output.losses["clip"] + weights.sim * output.losses["sim"] + output.losses["recon"]
    assert output.loss.item() == pytest.approx(total, rel=1e-5)


def test_erc_step_with_lora_trains_only_the_adapters():
    from diffusers_uip2p.training.train_uip2p import add_lora

    unet, models, batch = tiny_setup()
    add_lora(unet, rank=2)
    erc_step(unet, models, batch, ERCConfig(), torch.Generator().manual_seed(0)).loss.backward()
    with_grad = {name for name, p in unet.named_parameters() if p.grad is not None}
    assert with_grad and all("lora" in name for name in with_grad)


def test_erc_loss_falls_on_a_tiny_overfit_set():
    unet, models, batch = tiny_setup()
    config = ERCConfig(min_timestep=100, max_timestep=600, conditioning_dropout_prob=0.0)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    generator, losses = torch.Generator().manual_seed(0), []
    for _ in range(40):
        loss = erc_step(unet, models, batch, config, generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.85 * first, (first, last)


def test_supervised_target_is_the_posterior_mode_whatever_its_width():
    """A wide VAE posterior must not change the target: the supervised loss reads the mode, like ERC."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    unet, models, batch = tiny_setup()
    narrow = supervised_step(unet, models, batch, ERCConfig(), torch.Generator().manual_seed(0))
    encode = models.vae.encode

    def wide_encode(pixels, return_dict=True):
        dist = encode(pixels).latent_dist
        mean = dist.mean
        wide = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, 4.0)], dim=1))
        return AutoencoderKLOutput(latent_dist=wide) if return_dict else (wide,)

    models.vae.encode = wide_encode
    wide = supervised_step(unet, models, batch, ERCConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(narrow, wide)


def test_supervised_step_needs_edited_images_and_gives_a_finite_loss():
    unet, models, batch = tiny_setup()
    loss = supervised_step(unet, models, batch, ERCConfig(), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    del batch["edited_pixel_values"]
    with pytest.raises(ValueError, match="edited images"):
        supervised_step(unet, models, batch, ERCConfig())
    models.clip = None
    with pytest.raises(ValueError, match="CLIP"):
        erc_step(unet, models, batch, ERCConfig())


def test_gradient_checkpointing_gives_the_same_gradients_with_an_installed_recorder():
    from diffusers_uip2p.training.erc import AttentionRecorder

    unet, models, batch = tiny_setup()
    config = ERCConfig(conditioning_dropout_prob=0.0)
    erc_step(unet, models, batch, config, torch.Generator().manual_seed(0)).loss.backward()
    plain = [p.grad.clone() for p in unet.parameters()]
    unet.zero_grad()
    unet.enable_gradient_checkpointing()
    with pytest.raises(ValueError, match="AttentionRecorder"):
        erc_step(unet, models, batch, config, torch.Generator().manual_seed(0))
    with AttentionRecorder(unet) as recorder:
        erc_step(unet, models, batch, config, torch.Generator().manual_seed(0), recorder).loss.backward()
        with recorder.suspended():  # the UNet's own processors meanwhile, e.g. for validation images
            assert not any(type(p).__name__ == "ControlledAttnProcessor" for p in unet.attn_processors.values())
    for a, p in zip(plain, unet.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_min_snr_weights_on_hand_worked_timesteps():
    alpha_bar = torch.tensor([0.999, 0.9, 0.5, 0.01])  # SNR 999, 9, 1, 1/99
    assert torch.allclose(min_snr_weights(alpha_bar, 5.0), torch.tensor([5 / 999, 5 / 9, 1.0, 1.0]), rtol=1e-4)
    assert torch.allclose(min_snr_weights(alpha_bar, 5.0, "v_prediction"),
                          torch.tensor([5 / 1000, 5 / 10, 1 / 2, (1 / 99) / (1 / 99 + 1)]), rtol=1e-4)
    assert torch.equal(min_snr_weights(alpha_bar, 0), torch.ones(4))


@pytest.mark.parametrize("timestep", [10, 500, 990])
def test_supervised_loss_is_min_snr_weighted(timestep):
    """At a pinned timestep the weighted loss is the plain ε-MSE times min(SNR, γ)/SNR of that timestep."""
    unet, models, batch = tiny_setup()
    pinned = {"min_timestep": timestep, "max_timestep": timestep, "conditioning_dropout_prob": 0.0}
    plain = supervised_step(unet, models, batch, ERCConfig(snr_gamma=0, **pinned), torch.Generator().manual_seed(0))
    weighted = supervised_step(unet, models, batch, ERCConfig(snr_gamma=5, **pinned), torch.Generator().manual_seed(0))
    alpha_bar = models.noise_scheduler.alphas_cumprod[timestep].item()
    snr = alpha_bar / (1 - alpha_bar)
    assert weighted.item() == pytest.approx(plain.item() * min(snr, 5) / snr, rel=1e-5)
    with pytest.raises(ValueError, match="snr_gamma"):
        ERCConfig(snr_gamma=-1)


def test_denoising_anchor_is_one_more_term():
    unet, models, batch = tiny_setup()
    weights = ERCLossWeights(attn=0, denoise=0.5)
    output = erc_step(unet, models, batch, ERCConfig(weights=weights), torch.Generator().manual_seed(0))
    assert set(output.losses) == {"clip", "sim", "recon", "denoise"}
    total = output.losses["clip"] + output.losses["sim"] + output.losses["recon"] + 0.5 * output.losses["denoise"]
    assert output.loss.item() == pytest.approx(total, rel=1e-5)
    with pytest.raises(ValueError, match="`denoise` must be a number >= 0"):
        ERCLossWeights(denoise=-1)


def test_edits_draw_from_the_configured_timesteps_and_the_anchor_from_all():
    """With ``min_timestep=600`` the forward and reverse edits draw t ≥ 600; the anchor still denoises at every
    t, since sampling passes through all of them."""
    unet, models, batch = tiny_setup()
    seen = []
    unet.register_forward_hook(lambda module, args, output: seen.append(args[1].tolist()))
    config = ERCConfig(ERCLossWeights(attn=0, denoise=1.0), min_timestep=600, conditioning_dropout_prob=0.0)
    for seed in range(8):
        erc_step(unet, models, batch, config, torch.Generator().manual_seed(seed))
    edits, anchor = [t for call in seen[0::3] + seen[1::3] for t in call], [t for call in seen[2::3] for t in call]
    assert min(edits) >= 600 and min(anchor) < 600 and len(seen) == 24


def test_the_anchor_keeps_erc_a_denoiser():
    """30 ERC steps on a tiny model: alone, its ε-MSE on held-out input images grows past the base's; with the
    denoising anchor it stays below it (the health check's input_eps_ratio)."""
    import torch.nn.functional as F

    from diffusers_uip2p.shapes.dataset import split_edits
    from diffusers_uip2p.shapes.training_utils import scenes_to_tensor
    from diffusers_uip2p.training.health import HealthCheck, shapes_health_records

    edits = split_edits("train", 8)
    records, _ = shapes_health_records(8)
    records = {k: F.interpolate(v, size=16, mode="area") if torch.is_tensor(v) else v for k, v in records.items()}
    ratios = {}
    for anchor in (0.0, 1.0):
        unet, models, _ = tiny_setup()
        health = HealthCheck(models, records, tiny_instruct_pix2pix_components()["unet"].eval())
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
        generator, config = torch.Generator().manual_seed(0), ERCConfig(ERCLossWeights(attn=0.0, denoise=anchor))
        for step in range(30):
            chosen = [edits[(2 * step) % 8], edits[(2 * step + 1) % 8]]
            batch = {"pixel_values": F.interpolate(scenes_to_tensor([e.source for e in chosen]), size=16, mode="area"),
                     **{key: [getattr(e, key) for e in chosen] for key in
                        ("input_caption", "instruction", "edited_caption", "reverse_instruction")}}
            batch["edit_instruction"] = batch.pop("instruction")
            erc_step(unet, models, batch, config, generator).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        ratios[anchor] = health(unet)["input_eps_ratio"]
    assert ratios[0.0] > 1.2 and ratios[1.0] < 0.8, ratios
