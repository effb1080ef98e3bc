"""The Shapes training scripts run end to end (a few steps), and the shipped models load offline and work."""

import json

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPModel, CLIPTokenizer

from diffusers_uip2p import AutoEditPipeline, DualScheduleInversionScheduler, EditTaskClassifier
from diffusers_uip2p.shapes import render
from diffusers_uip2p.shapes import train_clip, train_t2i, train_vae
from diffusers_uip2p.shapes.dataset import split_edits, split_scenes
from diffusers_uip2p.shapes.evaluator import judge_caption
from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_pipeline, shapes_model_path
from diffusers_uip2p.shapes.training_utils import scenes_to_tensor


def test_training_scripts_run_a_few_steps(tmp_path):
    vae_dir, clip_dir, pipe_dir = tmp_path / "vae", tmp_path / "clip", tmp_path / "pipeline"
    train_vae.main(["--output", str(vae_dir), "--steps", "2", "--batch-size", "4", "--num-scenes", "8",
                    "--validation-scenes", "8", "--threads", "1"])
    train_clip.main(["--output", str(clip_dir), "--steps", "2", "--batch-size", "4", "--num-scenes", "8",
                     "--validation-scenes", "8", "--threads", "1"])
    train_t2i.main(["--output", str(pipe_dir), "--vae", str(vae_dir), "--clip", str(clip_dir), "--steps", "2",
                    "--batch-size", "4", "--num-scenes", "8", "--eval-scenes", "1", "--threads", "1"])
    train_vae.main(["--output", str(tmp_path / "vae-ft"), "--init", str(vae_dir), "--decoder-only", "--steps", "1",
                    "--batch-size", "4", "--num-scenes", "8", "--validation-scenes", "8", "--threads", "1"])
    torch.set_num_threads(1)  # the scripts set it for the process
    first, tuned = AutoencoderKL.from_pretrained(vae_dir), AutoencoderKL.from_pretrained(tmp_path / "vae-ft")
    assert torch.equal(first.encoder.conv_in.weight, tuned.encoder.conv_in.weight), "latent space must not move"
    assert not torch.equal(first.decoder.conv_out.weight, tuned.decoder.conv_out.weight)
    assert first.config.scaling_factor == tuned.config.scaling_factor
    assert "continued from an earlier one" in (tmp_path / "vae-ft" / "README.md").read_text()
    for folder in (vae_dir, clip_dir, pipe_dir):
        card = (folder / "README.md").read_text()
        assert "seed: 0" in card and "training time" in card and "--steps 2" in card
    assert AutoencoderKL.from_pretrained(vae_dir).config.scaling_factor > 0
    assert isinstance(CLIPModel.from_pretrained(clip_dir), CLIPModel)
    pipe = AutoEditPipeline.from_pretrained(pipe_dir)
    assert isinstance(pipe.scheduler, DualScheduleInversionScheduler)
    assert json.loads((pipe_dir / "model_index.json").read_text())["_class_name"] == "AutoEditPipeline"


def test_shipped_models_load_offline():
    pipe = load_shapes_pipeline()
    assert isinstance(pipe, AutoEditPipeline) and pipe.unet.config.sample_size == 16
    assert all(p.suffix != ".bin" for p in shapes_model_path("pipeline").rglob("*")), "safetensors only"
    clip, tokenizer, processor = load_shapes_clip()
    assert isinstance(tokenizer, CLIPTokenizer) and processor.crop_size["height"] == 64
    assert clip.config.text_config.vocab_size == len(tokenizer)


def test_shipped_folder_is_a_stable_diffusion_pipeline():
    pipe = StableDiffusionPipeline.from_pretrained(shapes_model_path("pipeline"), safety_checker=None,
                                                   feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a large red circle in the center on a white background", num_inference_steps=20,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_shipped_vae_and_clip_on_test_scenes():
    pipe = load_shapes_pipeline()
    scenes = split_scenes("test", 100)
    images = scenes_to_tensor(scenes[:16])
    with torch.no_grad():
        round_trip = pipe.vae.decode(pipe.vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((round_trip - images) / 2).pow(2).flatten(1).mean(1)
    assert (10 * torch.log10(1 / mse)).mean() > 28
    clip, tokenizer, _ = load_shapes_clip()
    assert train_clip.retrieval_top1(clip, tokenizer, scenes) > 0.8
    assert np.asarray(render(scenes[0])).shape == (64, 64, 3)


def test_shipped_pipeline_draws_test_captions_the_evaluator_accepts():
    """The first 8 test captions, one to three objects each. The shipped UNet draws 83 % of 100 test captions
    right at 50 steps (RESULTS.md; bar 80 %); at 25 steps here it gets all 8, the stage-4 UNet before it 4."""
    pipe = load_shapes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    scenes = split_scenes("test", 8)
    images = pipe([s.caption() for s in scenes], num_inference_steps=25, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(0)).images
    accepted = [judge_caption(scene, image).objects_correct for scene, image in zip(scenes, images, strict=True)]
    assert sum(accepted) >= 6, accepted


def test_shipped_pipeline_routes_auto_edits_with_its_classifier():
    pipe = load_shapes_pipeline()
    assert isinstance(pipe.task_classifier, EditTaskClassifier)
    edits = split_edits("test", 40)
    right = sum(pipe.route_edit(e.source.caption(), e.target.caption()).task == e.category for e in edits)
    assert right / len(edits) >= 0.9


def test_standardised_latents_decode_to_the_same_images():
    torch.manual_seed(0)
    vae = train_vae.shapes_vae().eval()
    images = scenes_to_tensor(split_scenes("train", 16))
    with torch.no_grad():
        before = vae(images, sample_posterior=False).sample
        train_vae.standardise_latents(vae, images)
        latents = vae.encode(images).latent_dist.mode() * vae.config.scaling_factor
        after = vae(images, sample_posterior=False).sample
    assert vae.config.scaling_factor == 1.0
    assert torch.allclose(latents.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(latents.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    assert (before - after).abs().max() < 1e-4
