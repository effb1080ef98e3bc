"""The README's main job: `diffusers-uip2p reconstruct` on the bundled sample with the built-in tiny model."""

import json

import PIL.Image
import torch

from diffusers_uip2p.cli import main


def test_reconstruct_writes_picture_and_report(tmp_path, capsys):
    assert main(["reconstruct", "--steps", "5", "--output", str(tmp_path), "--scale", "1"]) == 0
    report = json.loads((tmp_path / "reconstruction.json").read_text())
    assert report["dsi"]["latent_relative_error"] == 0.0
    assert report["dsi"]["psnr_vs_vae_round_trip_db"] == float("inf")
    assert report["ddim"]["latent_relative_error"] > 1e-3
    assert report["dsi"]["unet_calls"] == 2 * 5 - 2 + 2 * 5 - 3
    assert report["ddim"]["unet_calls"] == 2 * (2 * 5 - 2)
    picture = PIL.Image.open(tmp_path / "reconstruction.png")
    assert picture.size == (4 * 64, 64)  # input | VAE round trip | DSI | DDIM
    assert "DSI" in capsys.readouterr().out


def test_convert_widens_a_text_to_image_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    from diffusers_uip2p import UIP2PPipeline
    from diffusers_uip2p.testing import tiny_text_to_image_components

    components = tiny_text_to_image_components()
    StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "t2i")
    assert main(["convert", "--model", str(tmp_path / "t2i"), "--output", str(tmp_path / "ip2p")]) == 0
    pipe = UIP2PPipeline.from_pretrained(tmp_path / "ip2p")
    assert pipe.unet.config.in_channels == 8
    assert torch.equal(pipe.unet.conv_in.weight[:, 4:], torch.zeros_like(pipe.unet.conv_in.weight[:, 4:]))
    assert torch.equal(pipe.unet.conv_in.weight[:, :4], components["unet"].conv_in.weight)
