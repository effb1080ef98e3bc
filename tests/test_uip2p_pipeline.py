"""UIP2PPipeline: parity with InstructPix2Pix, reverse self-check, candidates, multi-turn, attention maps,
checkpoint conversion, input validation. Tiny offline components only."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel, UNet2DConditionOutput

from diffusers_uip2p import UIP2PPipeline, UIP2PPipelineOutput, convert_unet_to_instruct_pix2pix
from diffusers_uip2p.pipelines import convert_pipeline_folder
from diffusers_uip2p.testing import tiny_instruct_pix2pix_components, tiny_text_to_image_components

NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
FORWARD, REVERSE = "turn it blue", "turn it red"


def make(cls=UIP2PPipeline, **overrides):
    pipe = cls(**{**tiny_instruct_pix2pix_components(), **overrides}, **NO_SAFETY)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, image, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 3, "output_type": "np", **kwargs}
    return pipe(kwargs.pop("prompt", FORWARD), image=image, generator=torch.Generator().manual_seed(seed), **kwargs)


def as_array(images):
    return np.stack([np.asarray(i) for i in images]) if isinstance(images, list) else np.asarray(images)


@pytest.fixture
def pipes():
    components = tiny_instruct_pix2pix_components()
    parent = StableDiffusionInstructPix2PixPipeline(**components, **NO_SAFETY)
    child = UIP2PPipeline(**components, **NO_SAFETY)
    for pipe in (parent, child):
        pipe.set_progress_bar_config(disable=True)
    return parent, child


# ---------------------------------------------------------------- parity and loading


@pytest.mark.parametrize("output_type", ["latent", "np", "pil"])
@pytest.mark.parametrize("guidance", [(7.5, 1.5), (1.0, 1.0)], ids=["guided", "unguided"])
def test_plain_call_is_bitwise_the_parent(pipes, rgb_image, output_type, guidance):
    parent, child = pipes
    kwargs = {"output_type": output_type, "guidance_scale": guidance[0], "image_guidance_scale": guidance[1]}
    expected, got = run(parent, rgb_image, **kwargs), run(child, rgb_image, **kwargs)
    assert isinstance(got, UIP2PPipelineOutput)
    if output_type == "latent":
        assert torch.equal(got.images, expected.images)
    else:
        assert np.array_equal(as_array(got.images), as_array(expected.images))
    assert got.nsfw_content_detected == expected.nsfw_content_detected
    assert run(child, rgb_image, return_dict=False)[0].shape == run(parent, rgb_image, return_dict=False)[0].shape


def test_save_load_and_from_pipe_both_ways(pipes, rgb_image, tmp_path):
    parent, child = pipes
    expected = run(child, rgb_image).images
    child.save_pretrained(tmp_path)
    for cls in (UIP2PPipeline, StableDiffusionInstructPix2PixPipeline):
        loaded = cls.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is cls and np.array_equal(run(loaded, rgb_image).images, expected)
    to_child = UIP2PPipeline.from_pipe(parent)
    to_parent = StableDiffusionInstructPix2PixPipeline.from_pipe(child)
    assert type(to_child) is UIP2PPipeline and to_child.unet is parent.unet
    assert type(to_parent) is StableDiffusionInstructPix2PixPipeline and to_parent.unet is child.unet
    for pipe in (to_child, to_parent):
        pipe.set_progress_bar_config(disable=True)
        assert np.array_equal(run(pipe, rgb_image).images, expected)


# ---------------------------------------------------------------- reverse self-check


class LosslessVAE(AutoencoderKL):
    """Latents are the pixels plus a zero 4th channel, at full resolution: decode(encode(x)) == x exactly."""

    def encode(self, x, return_dict=True):
        mean = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
        dist = DiagonalGaussianDistribution(torch.cat([mean, torch.zeros_like(mean)], dim=1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z, return_dict=True, generator=None):
        return DecoderOutput(sample=z[:, :3]) if return_dict else (z[:, :3],)


class IdentityEditUNet(UNet2DConditionModel):
    """Predicts the clean latents (``prediction_type="sample"``) as its image-conditioning channels: the
    perfect identity edit, whatever the instruction. The image latents are unscaled, the latents the
    pipeline decodes are scaled, hence the factor."""

    def forward(self, sample, timestep, encoder_hidden_states, *args, return_dict=True, **kwargs):
        clean = sample[:, 4:] * 0.18215
        return UNet2DConditionOutput(sample=clean) if return_dict else (clean,)


def reversibility_pipe(identity: bool):
    components = tiny_instruct_pix2pix_components()
    torch.manual_seed(0)
    vae = LosslessVAE(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), layers_per_block=1,
                      up_block_types=("UpDecoderBlock2D",), norm_num_groups=8, latent_channels=4).eval()
    overrides = {"vae": vae}
    if identity:
        unet = components["unet"]
        overrides["unet"] = IdentityEditUNet.from_config(unet.config)
        overrides["scheduler"] = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                               clip_sample=False, set_alpha_to_one=True, prediction_type="sample")
    return make(**overrides)


def test_reverse_self_check_scores_a_perfect_round_trip_high_and_a_lossy_one_lower(rgb_image):
    """Random tiny weights edit nothing, so no honest "reversible edit" exists among them; and a random VAE
    does not even reconstruct its input, which would drown any score. So the score is checked against edits
    whose reversibility is known by construction, all through a lossless VAE (latents = pixels):

    * the identity edit (a UNet that predicts its image conditioning; DDIM ending at alpha = 1, no guidance):
      forward and reverse both return their input, so both scores must be ~1;
    * the same model under image guidance 1.5: IP2P's unconditional branch sees zero image latents, so the
      guided prediction is 1.5x the image: an edit (a contrast boost) that re-applying does not undo: lower;
    * the random tiny IP2P UNet: the "reconstruction" ignores the input entirely: clearly lower still.
    """
    common = {"reverse_instruction": REVERSE, "num_inference_steps": 2, "output_type": "pt"}
    identity = run(reversibility_pipe(True), rgb_image, guidance_scale=1.0, **common)
    assert identity.reversibility_image[0] > 0.999 and identity.reversibility_latent[0] > 0.999
    assert identity.reversibility == identity.reversibility_image
    assert torch.allclose(identity.reconstructions, identity.images, atol=1e-5)
    boosted = run(reversibility_pipe(True), rgb_image, guidance_scale=2.0, image_guidance_scale=1.5, **common)
    random = run(reversibility_pipe(False), rgb_image, **common)
    for metric in ("reversibility_image", "reversibility_latent"):
        assert getattr(identity, metric)[0] > getattr(boosted, metric)[0] + 0.05
    assert identity.reversibility_image[0] > random.reversibility_image[0] + 0.1
    assert random.reconstructions.shape == random.images.shape == (1, 3, 16, 16)


def test_candidates_are_ranked_and_reproducible_from_their_seeds(pipes, rgb_image):
    parent, child = pipes
    out = child(FORWARD, rgb_image, reverse_instruction=REVERSE, num_candidates=3, seed=11, num_inference_steps=3,
                output_type="np", reversibility_metric="latent")
    assert sorted(out.seeds) == [11, 12, 13] and out.reversibility == out.reversibility_latent
    assert out.reversibility == sorted(out.reversibility, reverse=True) and out.images.shape[0] == 3
    for index, seed in enumerate(out.seeds):
        assert np.array_equal(run(parent, rgb_image, seed=seed).images[0], out.images[index])
        single = run(child, rgb_image, seed=seed, reverse_instruction=REVERSE)
        assert single.reversibility_latent[0] == out.reversibility_latent[index]
        assert np.array_equal(single.reconstructions[0], out.reconstructions[index])
    drawn = [child(FORWARD, rgb_image, reverse_instruction=REVERSE, num_candidates=2, num_inference_steps=2,
                   generator=torch.Generator().manual_seed(3)).seeds for _ in range(2)]
    assert drawn[0] == drawn[1]


def test_batch_of_prompts_with_reverse_list(pipes, rgb_image):
    _, child = pipes
    out = child([FORWARD, "add a hat"], [rgb_image, rgb_image], reverse_instruction=[REVERSE, "remove the hat"],
                num_candidates=2, seed=0, num_inference_steps=2, output_type="pt")
    assert out.images.shape == (4, 3, 16, 16) and len(out.seeds) == 4 and len(out.reversibility) == 4
    assert out.reversibility[0] >= out.reversibility[1] and out.reversibility[2] >= out.reversibility[3]


# ---------------------------------------------------------------- multi-turn and attention


def test_edit_sequence(pipes, rgb_image):
    _, child = pipes
    single = run(child, rgb_image, num_inference_steps=2)
    sequence = child.edit_sequence(rgb_image, [FORWARD], num_inference_steps=2, output_type="np",
                                   generator=torch.Generator().manual_seed(0))
    assert len(sequence.images) == 1 and np.array_equal(sequence.images[0], single.images)
    chain = child.edit_sequence(rgb_image, [FORWARD, "add a hat"], ["remove the hat", REVERSE], num_inference_steps=2)
    assert len(chain.images) == len(chain.reverse_images) == 2 and len(chain.reversibility_image) == 1
    with pytest.raises(ValueError, match="reverse_instructions"):
        child.edit_sequence(rgb_image, [FORWARD, "add a hat"], [REVERSE])


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0], ids=["guided", "unguided"])
def test_attention_maps_of_the_text_conditioned_branch(pipes, rgb_image, guidance_scale):
    _, child = pipes
    prompts = [FORWARD, "add a hat"]
    out = child(prompts, [rgb_image, rgb_image], return_attention_maps=True, num_inference_steps=2,
                guidance_scale=guidance_scale, output_type="np", generator=torch.Generator().manual_seed(0))
    assert len(out.attention_maps) == 2 and out.images.shape[0] == 2
    for text, maps in zip(prompts, out.attention_maps, strict=True):
        assert "".join(token for token, _ in maps) == text.replace(" ", "")  # byte-level tokens, one per char
        assert all(m.shape == (4, 4) and torch.isfinite(m).all() for _, m in maps)
    assert not torch.equal(out.attention_maps[0][0][1], out.attention_maps[1][0][1])


# ---------------------------------------------------------------- conversion


def test_converted_unet_reproduces_the_text_to_image_unet():
    unet = tiny_text_to_image_components()["unet"]
    converted = convert_unet_to_instruct_pix2pix(unet)
    assert converted.config.in_channels == 8 and unet.config.in_channels == 4
    assert torch.count_nonzero(converted.conv_in.weight[:, 4:]) == 0
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = unet(latents, 10, text).sample
        for image_latents in (torch.zeros_like(latents), torch.randn_like(latents)):
            got = converted(torch.cat([latents, image_latents], dim=1), 10, text).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="already takes extra"):
        convert_unet_to_instruct_pix2pix(converted)


def test_convert_pipeline_folder(tmp_path, rgb_image):
    source = StableDiffusionPipeline(**tiny_text_to_image_components(), **NO_SAFETY)
    source.save_pretrained(tmp_path / "t2i")
    convert_pipeline_folder(tmp_path / "t2i", tmp_path / "ip2p")
    assert list((tmp_path / "ip2p" / "unet").glob("*.safetensors"))
    pipe = UIP2PPipeline.from_pretrained(tmp_path / "ip2p")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 8 and type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert run(pipe, rgb_image, num_inference_steps=2).images.shape == (1, 16, 16, 3)


# ---------------------------------------------------------------- validation


def test_bad_inputs_name_the_argument(pipes, rgb_image):
    _, child = pipes
    with pytest.raises(ValueError, match="`image` is required"):
        child(FORWARD)
    with pytest.raises(ValueError, match="`image` holds 3 images but `prompt` 2"):
        child([FORWARD, REVERSE], [rgb_image] * 3, num_inference_steps=2)
    with pytest.raises(ValueError, match="`num_candidates` must be >= 1"):
        child(FORWARD, rgb_image, reverse_instruction=REVERSE, num_candidates=0)
    with pytest.raises(TypeError, match="`num_candidates` must be an int"):
        child(FORWARD, rgb_image, reverse_instruction=REVERSE, num_candidates=2.0)
    with pytest.raises(ValueError, match="needs `reverse_instruction`|give `reverse_instruction`"):
        child(FORWARD, rgb_image, num_candidates=2)
    with pytest.raises(ValueError, match="`reverse_instruction` holds 1 instructions but `prompt` 2"):
        child([FORWARD, REVERSE], [rgb_image] * 2, reverse_instruction=[REVERSE])
    with pytest.raises(TypeError, match="`prompt` must be a str"):
        child(3, rgb_image)
    text_to_image_unet = tiny_text_to_image_components()["unet"]
    with pytest.raises(ValueError, match="convert_unet_to_instruct_pix2pix"):
        make(unet=text_to_image_unet)
