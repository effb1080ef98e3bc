"""Evaluation metrics: closed-form pixel metrics, agreement with torchmetrics, LPIPS's formula, CLIP and DINO
metrics on tiny random models, PIE-Bench's mask conventions, the table scalings and bad input."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchmetrics.functional import mean_absolute_error, mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from transformers import CLIPImageProcessorPil, CLIPProcessor, ViTConfig, ViTImageProcessorPil, ViTModel

from diffusers_uip2p.evaluation import clip_metrics
from diffusers_uip2p.evaluation.lpips import LPIPSNetwork, load_squeezenet_lpips
from diffusers_uip2p.evaluation.metrics import (
    KNOWN_METRICS,
    SCALES,
    Metrics,
    clip_dir,
    clip_edited_score,
    clip_i,
    clip_score,
    clip_t,
    decode_pie_mask,
    dino_similarity,
    edited_region,
    l1,
    l2,
    lpips,
    mse,
    on_unedited_region,
    psnr,
    squeezenet_lpips_network,
    ssim,
    strip_brackets,
    structure_distance,
    summarize,
    unedited_region,
)
from diffusers_uip2p.testing import tiny_clip_model


@pytest.fixture(scope="module")
def clip():
    model, tokenizer = tiny_clip_model(image_size=32)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8)
    return ViTModel(config, add_pooling_layer=False).eval(), ViTImageProcessorPil(size={"height": 32, "width": 32})


def images(seed, batch=2, size=32):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- pixel metrics -----------------------------------------------------------------------------------------

def test_constant_offset_closed_forms():
    target = 0.25 + 0.5 * images(0)
    pred = target + 0.1
    assert mse(pred, target).tolist() == pytest.approx([0.01, 0.01])
    assert l2(pred, target).tolist() == pytest.approx([0.01, 0.01])  # MagicBrush's L2 is the MSE, no root
    assert l1(pred, target).tolist() == pytest.approx([0.1, 0.1])
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0])
    assert psnr(pred * 255, target * 255, data_range=255).tolist() == pytest.approx([20.0, 20.0])
    assert psnr(target, target).tolist() == [math.inf, math.inf]
    assert ssim(target, target).tolist() == pytest.approx([1.0, 1.0])


def test_ssim_of_constant_images_closed_form():
    # Constant images have no variance or covariance: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01·1)².
    a, b, c1 = 0.2, 0.5, 0.01**2
    value = ssim(torch.full((1, 3, 24, 24), a), torch.full((1, 3, 24, 24), b))
    assert value.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_pixel_metrics_agree_with_torchmetrics():
    pred, target = images(1), images(2)
    for i in range(2):
        p, t = pred[i:i + 1], target[i:i + 1]
        assert psnr(p, t).item() == pytest.approx(peak_signal_noise_ratio(p, t, data_range=1.0).item(), rel=1e-5)
        assert ssim(p, t).item() == pytest.approx(structural_similarity_index_measure(p, t, data_range=1.0).item(),
                                                  rel=1e-5)
        assert mse(p, t).item() == pytest.approx(mean_squared_error(p, t).item(), rel=1e-5)
        assert l1(p, t).item() == pytest.approx(mean_absolute_error(p, t).item(), rel=1e-5)


def test_pixel_metrics_reject_different_shapes():
    with pytest.raises(ValueError, match="same shape"):
        mse(images(0, size=32), images(0, size=16))


# --- LPIPS -------------------------------------------------------------------------------------------------

def one_layer_network(weights=(0.2, 0.3, 0.5)):
    """LPIPS on the raw [−1, 1] pixels: identity backbone, no shift/scale, one weight per colour channel."""
    return LPIPSNetwork([nn.Identity()], [torch.tensor(weights)], shift=(0, 0, 0), scale=(1, 1, 1))


def test_lpips_formula_by_hand():
    # [0,1] pixels (1, .5, .5) and (.5, 1, .5) are (1, 0, 0) and (0, 1, 0) in [−1, 1], already unit vectors:
    # squared difference (1, 1, 0), weighted by (.2, .3, .5) = 0.5 at every pixel, so 0.5 after the mean.
    pred = torch.tensor([1.0, 0.5, 0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    target = torch.tensor([0.5, 1.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert lpips(pred, target, one_layer_network()).item() == pytest.approx(0.5)
    # A second layer adds its own term: the sum over layers.
    two = LPIPSNetwork([nn.Identity(), nn.Identity()], [torch.tensor([0.2, 0.3, 0.5]), torch.ones(3)],
                       shift=(0, 0, 0), scale=(1, 1, 1))
    assert lpips(pred, target, two).item() == pytest.approx(0.5 + 2.0)


def test_lpips_properties():
    network = one_layer_network()
    a, b = images(3), images(4)
    assert lpips(a, a, network).tolist() == pytest.approx([0, 0], abs=1e-12)
    assert lpips(a, b, network).tolist() == pytest.approx(lpips(b, a, network).tolist())
    # Features are unit-normalised along channels: rescaling them changes nothing.
    scaled = LPIPSNetwork([nn.Identity()], [torch.tensor([0.2, 0.3, 0.5])], shift=(0, 0, 0), scale=(3, 3, 3))
    assert lpips(a, b, scaled).tolist() == pytest.approx(lpips(a, b, network).tolist(), rel=1e-5)


def test_squeezenet_lpips_agrees_with_torchmetrics(monkeypatch):
    """Our SqueezeNet LPIPS against torchmetrics' implementation (PIE-Bench's), given the same weights.

    torchmetrics takes its backbone from torchvision, which is not installed: hand it ours, in torchvision's
    layout, and copy our channel weights into its "lin" layers."""
    from torchmetrics.functional.image import lpips as torchmetrics_lpips

    network = squeezenet_lpips_network(seed=0)
    flat = nn.Sequential(*[module for block in network.slices for module in block])
    monkeypatch.setattr(torchmetrics_lpips, "_get_tv_model_features", lambda net, pretrained=False: flat)
    reference = torchmetrics_lpips._LPIPS(pretrained=False, net="squeeze", pnet_rand=True).eval()
    for lin, weight in zip(reference.lins, network.channel_weights, strict=True):
        lin.model[-1].weight.data.copy_(weight.view(1, -1, 1, 1))
    a, b = images(5, size=48), images(6, size=48)
    expected = reference(a * 2 - 1, b * 2 - 1).flatten()
    assert lpips(a, b, network).tolist() == pytest.approx(expected.tolist(), rel=1e-4)


def test_squeezenet_lpips_loads_from_safetensors(tmp_path):
    source = squeezenet_lpips_network(seed=1)
    state = {f"features.{k.split('.', 1)[1]}": v for k, v in source.slices.state_dict().items()}
    state.update({f"lin{i}.model.1.weight": w.detach().view(1, -1, 1, 1).clone()
                  for i, w in enumerate(source.channel_weights)})
    save_file(state, tmp_path / "lpips.safetensors")
    loaded = load_squeezenet_lpips(str(tmp_path / "lpips.safetensors"))
    a, b = images(7), images(8)
    assert lpips(a, b, loaded).tolist() == pytest.approx(lpips(a, b, source).tolist())
    assert lpips(a, b, squeezenet_lpips_network(seed=2)).tolist() != pytest.approx(lpips(a, b, source).tolist())
    del state["lin6.model.1.weight"]
    with pytest.raises(ValueError, match="missing .*lin6"):
        squeezenet_lpips_network(state)


# --- masks (PIE-Bench conventions) -------------------------------------------------------------------------

def test_decode_pie_mask_runs_and_borders():
    mask = decode_pie_mask([6, 2, 12, 1], height=5, width=5)  # flat 6, 7 = row 1, cols 1–2; flat 12 = row 2, col 2
    expected = torch.ones(5, 5)
    expected[1:4, 1:4] = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float32)
    assert torch.equal(mask, expected)
    # No runs: only the four 1-px borders are edited; a run past the end is cut.
    assert decode_pie_mask([], height=4, width=4)[1:3, 1:3].sum() == 0
    assert decode_pie_mask([], height=4, width=4).sum() == 12
    assert decode_pie_mask([20, 100], height=5, width=5)[4].sum() == 5
    with pytest.raises(ValueError, match="pairs"):
        decode_pie_mask([1, 2, 3])


def test_regions_zero_rather_than_exclude():
    source = images(9)
    mask = torch.zeros(2, 32, 32)
    mask[:, :16] = 1  # the top half is edited
    assert torch.equal(unedited_region(source, mask)[:, :, :16], torch.zeros(2, 3, 16, 32))
    assert torch.equal(unedited_region(source, mask)[:, :, 16:], source[:, :, 16:])
    assert torch.equal(edited_region(source, mask[:, None]) + unedited_region(source, mask), source)
    # The edited half differs a lot, the unedited half by 0.1: zeroed pixels still count in the mean, so
    # the unedited MSE is 0.1² × ½, and PSNR follows from it.
    edited = source.clone()
    edited[:, :, :16] = 1 - edited[:, :, :16]
    edited[:, :, 16:] = (edited[:, :, 16:] + 0.1).clamp(max=1)
    source[:, :, 16:] = edited[:, :, 16:] - 0.1
    assert on_unedited_region(mse, source, edited, mask).tolist() == pytest.approx([0.005, 0.005])
    assert on_unedited_region(psnr, source, edited, mask).tolist() == pytest.approx([-10 * math.log10(0.005)] * 2)


def test_all_edited_mask_gives_nan_that_summaries_skip():
    source, edited = images(10), images(11)
    mask = torch.zeros(2, 32, 32)
    mask[1] = 1  # image 1 is edited everywhere
    metrics = Metrics(["psnr_unedited", "ssim_unedited", "mse_unedited", "psnr"])
    rows = metrics.compute(source, edited, mask=mask)
    assert all(not math.isnan(v) for v in rows[0].values())
    assert all(math.isnan(rows[1][name]) for name in ("psnr_unedited", "ssim_unedited", "mse_unedited"))
    summary = summarize(rows)
    assert summary["mse_unedited"] == pytest.approx(rows[0]["mse_unedited"] * 1e4)
    assert summary["ssim_unedited"] == pytest.approx(rows[0]["ssim_unedited"] * 1e2)
    assert summary["mse_unedited_nan_skipped"] == 1 and summary["psnr_nan_skipped"] == 0
    assert summary["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)


def test_summarize_scales_and_edge_cases():
    rows = [{"id": "000", "lpips": 0.05, "structure_distance": 0.01, "clip_whole": 25.0, "mse": float("nan")},
            {"id": "001", "lpips": 0.07, "structure_distance": 0.03, "clip_whole": 27.0, "mse": float("nan")}]
    summary = summarize(rows)
    assert summary["lpips"] == pytest.approx(60.0) and summary["structure_distance"] == pytest.approx(20.0)
    assert summary["clip_whole"] == pytest.approx(26.0)  # CLIP scores are reported as computed
    assert math.isnan(summary["mse"]) and summary["mse_nan_skipped"] == 2
    assert "id" not in summary
    assert summarize(rows, scales={})["lpips"] == pytest.approx(0.06)
    assert SCALES == {"structure_distance": 1e3, "lpips": 1e3, "lpips_unedited": 1e3, "mse": 1e4,
                      "mse_unedited": 1e4, "ssim": 1e2, "ssim_unedited": 1e2}


# --- CLIP --------------------------------------------------------------------------------------------------

def test_clip_metrics_symmetry_range_identity(clip):
    a, b = images(12), images(13)
    assert clip_i(a, a, *clip).tolist() == pytest.approx([1, 1], abs=1e-5)
    assert clip_i(a, b, *clip).tolist() == pytest.approx(clip_i(b, a, *clip).tolist(), abs=1e-6)
    cosines = clip_t(a, ["a red cube", "a blue ball"], *clip)
    assert ((cosines >= -1) & (cosines <= 1)).all()
    scores = clip_score(a, "a red cube", *clip)
    assert ((scores >= 0) & (scores <= 100)).all()
    assert scores.tolist() == pytest.approx((100 * clip_t(a, "a red cube", *clip).clamp(min=0)).tolist())
    # Emu Edit's CLIP_dir: no image change agrees with nothing; swapping the captions flips the sign.
    assert clip_dir(a, a, "a cube", "a ball", *clip).tolist() == [0, 0]
    forward = clip_dir(a, b, "a cube", "a ball", *clip)
    assert clip_dir(a, b, "a ball", "a cube", *clip).tolist() == pytest.approx((-forward).tolist(), abs=1e-6)
    assert ((forward >= -1) & (forward <= 1)).all()


def test_clip_score_strips_brackets_and_masks(clip):
    a = images(14)
    assert strip_brackets("a [red] car on [the] road") == "a red car on the road"
    assert clip_score(a, "a [red] car", *clip).tolist() == pytest.approx(clip_score(a, "a red car", *clip).tolist())
    full, empty = torch.ones(2, 32, 32), torch.zeros(2, 32, 32)
    assert clip_edited_score(a, full, "a car", *clip).tolist() == pytest.approx(clip_score(a, "a car", *clip).tolist())
    assert all(math.isnan(v) for v in clip_edited_score(a, empty, "a car", *clip).tolist())


def test_metrics_class_clip_values_match_the_functions(clip):
    source, edited = images(15), images(16)
    mask = decode_pie_mask([300, 200], height=32, width=32)
    metrics = Metrics(["clip_i", "clip_im", "clip_t", "clip_out", "clip_dir", "clip_whole", "clip_edited",
                       "clip_source"], clip=clip)
    rows = metrics.compute(source, edited, source_prompt="a [cat]", target_prompt="a [dog]",
                           source_caption="a cat", target_caption=["a dog", "a bird"], mask=mask)
    column = {name: [row[name] for row in rows] for name in rows[0]}
    assert column["clip_i"] == pytest.approx(clip_i(source, edited, *clip).tolist(), abs=1e-5)
    assert column["clip_im"] == column["clip_i"]
    assert column["clip_t"] == pytest.approx(clip_t(edited, ["a dog", "a bird"], *clip).tolist(), abs=1e-5)
    assert column["clip_out"] == column["clip_t"]
    assert column["clip_dir"] == pytest.approx(
        clip_dir(source, edited, "a cat", ["a dog", "a bird"], *clip).tolist(), abs=1e-5)
    assert column["clip_whole"] == pytest.approx(clip_score(edited, "a dog", *clip).tolist(), abs=1e-3)
    assert column["clip_source"] == pytest.approx(clip_score(source, "a cat", *clip).tolist(), abs=1e-3)
    assert column["clip_edited"] == pytest.approx(
        clip_edited_score(edited, mask, "a dog", *clip).tolist(), abs=1e-3)


# --- DINO and structure distance ---------------------------------------------------------------------------

def test_dino_similarity(vit):
    a, b = images(17), images(18)
    assert dino_similarity(a, a, *vit).tolist() == pytest.approx([1, 1], abs=1e-5)
    values = dino_similarity(a, b, *vit)
    assert values.tolist() == pytest.approx(dino_similarity(b, a, *vit).tolist(), abs=1e-6)
    assert ((values >= -1) & (values <= 1)).all()


def test_structure_distance(vit):
    model = vit[0]
    a, b = images(19, size=40), images(20, size=40)
    assert structure_distance(a, a, model).tolist() == [0, 0]
    distance = structure_distance(a, b, model)
    assert (distance > 0).all()
    assert distance.tolist() == pytest.approx(structure_distance(b, a, model).tolist())
    assert structure_distance(a, b, model, pie_bench_quirk=False).tolist() != pytest.approx(distance.tolist())


def test_structure_distance_uses_last_layer_keys_with_cls(vit):
    model = vit[0]
    pixels = clip_metrics.structure_inputs(images(21, size=40))
    assert pixels.shape == (2, 3, 224, 224)
    similarity = clip_metrics.key_self_similarity(pixels, model)
    tokens = 1 + (224 // 8) ** 2  # CLS + patches
    assert similarity.shape == (2, tokens, tokens)
    assert torch.diagonal(similarity, dim1=1, dim2=2) == pytest.approx(torch.ones(2, tokens), abs=1e-5)
    assert clip_metrics.last_key_projection(model) is model.layers[-1].attention.k_proj
    with pytest.raises(ValueError, match="structure_model"):
        clip_metrics.last_key_projection(nn.Linear(2, 2))


def test_structure_preprocessing_matches_pie_bench():
    # torchvision Resize(224, max_size=480): shorter side 224 unless the longer side would pass 480.
    assert clip_metrics.resized_size(512, 512, 224, 480) == (224, 224)
    assert clip_metrics.resized_size(512, 768, 224, 480) == (224, 336)
    assert clip_metrics.resized_size(100, 1000, 224, 480) == (48, 480)
    # The quirk: ImageNet normalisation on 0–255 values (white → (255 − 0.485) / 0.229 in the red channel).
    white = torch.ones(1, 3, 224, 224)
    assert clip_metrics.structure_inputs(white)[0, 0, 0, 0].item() == pytest.approx((255 - 0.485) / 0.229)
    assert clip_metrics.structure_inputs(white, pie_bench_quirk=False)[0, 0, 0, 0].item() == pytest.approx(
        (1 - 0.485) / 0.229)


# --- the Metrics class: every name, describe(), bad input --------------------------------------------------

def test_every_known_metric_runs_and_is_described(clip, vit):
    network = LPIPSNetwork([nn.Conv2d(3, 4, 3)], [torch.ones(4)])
    metrics = Metrics(list(KNOWN_METRICS), clip=clip, dino=vit, lpips_network=network, structure_model=vit[0])
    source, edited = images(22), images(23)
    rows = metrics.compute(source, edited, source_prompt="a cat", target_prompt="a dog", source_caption="a cat",
                           target_caption="a dog", mask=decode_pie_mask([100, 300], 32, 32))
    assert len(rows) == 2 and all(set(row) == set(KNOWN_METRICS) for row in rows)
    assert all(isinstance(v, float) for row in rows for v in row.values())
    identical = metrics.compute(source, source, source_prompt="a cat", target_prompt="a dog", source_caption="a",
                                target_caption="b", mask=torch.zeros(32, 32))
    assert identical[0]["structure_distance"] == 0 and identical[0]["lpips"] == pytest.approx(0, abs=1e-9)
    assert identical[0]["dino"] == pytest.approx(1, abs=1e-5) and identical[0]["clip_i"] == pytest.approx(1, abs=1e-5)
    assert identical[0]["psnr"] == math.inf and identical[0]["ssim_unedited"] == pytest.approx(1)
    description = json.loads(json.dumps(metrics.describe()))
    assert description["backbones"]["clip"]["id"] == "openai/clip-vit-large-patch14"
    assert description["backbones"]["dino"]["id"] == "facebook/dino-vitb8"
    assert description["backbones"]["clip"]["processor"]["image_processor"]["crop_size"] == {"height": 32, "width": 32}
    assert "no /255" in description["backbones"]["structure_model"]["preprocessing"]
    assert description["metrics"]["mse_unedited"]["scale"] == 1e4
    assert description["metrics"]["l2"]["definition"].startswith("mean squared error")
    assert set(description["versions"]) >= {"torch", "transformers", "torchmetrics"}


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric.*'fid'.*psnr, ssim"):
        Metrics(["psnr", "fid"])


def test_missing_model_names_the_argument():
    for name, argument in (("lpips", "lpips_network"), ("clip_whole", "clip"), ("dino", "dino"),
                           ("structure_distance", "structure_model")):
        with pytest.raises(ValueError, match=argument):
            Metrics([name])


def test_images_and_masks_of_different_sizes():
    metrics = Metrics(["psnr_unedited"])
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(32, 32\)"):
        metrics.compute(images(0), images(1), mask=torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="source and edited must have the same size"):
        metrics.compute(images(0), images(1, size=16))
    with pytest.raises(ValueError, match="mask"):
        metrics.compute(images(0), images(1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.compute(images(0) * 2, images(1), mask=torch.zeros(32, 32))


def test_missing_texts_are_named(clip):
    with pytest.raises(ValueError, match="source_caption"):
        Metrics(["clip_dir"], clip=clip).compute(images(0), images(1), target_caption="a dog")
    with pytest.raises(ValueError, match="one per image"):
        Metrics(["clip_t"], clip=clip).compute(images(0), images(1), target_caption=["only one"])
