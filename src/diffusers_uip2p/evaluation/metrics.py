"""The benchmarks' metrics with their exact conventions, and :class:`Metrics`, which the runners use.

Images are float tensors [B, 3, H, W] in [0, 1]; masks are [B, 1, H, W], [B, H, W] or [H, W] with
1 = edited region. Every function returns one value per image ([B], float64). Sources of each
convention: PIE-Bench = cure-lab/PnPInversion ``evaluation/`` (torchmetrics metrics, masks, CLIP score,
structure distance); MagicBrush = OSU-NLP-Group/MagicBrush ``evaluation/image_eval.py`` (L1, L2, CLIP-I,
DINO, CLIP-T); Emu Edit = its paper (CLIP_dir, CLIP_im, CLIP_out, L1, DINO). Peers disagree on these
choices (../shared/notes/user-pain-points.md §2), so :meth:`Metrics.describe` records every one of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torchmetrics
import transformers

from .clip_metrics import (
    CLIP_ID,
    DINO_ID,
    as_texts,
    clip_dir,
    clip_edited_score,
    clip_i,
    clip_image_features,
    clip_score,
    clip_t,
    clip_text_features,
    dino_features,
    dino_similarity,
    direction_similarity,
    strip_brackets,
    structure_distance,
)
from .lpips import LPIPSNetwork, load_squeezenet_lpips, lpips, squeezenet_lpips_network
from .masks import (
    as_mask,
    decode_pie_mask,
    edited_region,
    empty_edited_region,
    empty_unedited_region,
    on_unedited_region,
    unedited_region,
)
from .pixel_metrics import l1, l2, mse, psnr, ssim

LPIPS_ID = "lpips-squeezenet1.1 (PIE-Bench: torchmetrics LPIPS net_type='squeeze')"


# PnPInversion's and DSI's PIE-Bench tables print Structure Distance ×10³, LPIPS ×10³, MSE ×10⁴ and SSIM ×10²
# (their column headers); PSNR and the CLIP scores are printed as computed. Pass scales={} for raw values
# (DSI Table 2's reconstruction SSIM, MagicBrush, Emu Edit).
SCALES: dict[str, float] = {
    "structure_distance": 1e3,
    "lpips": 1e3, "lpips_unedited": 1e3,
    "mse": 1e4, "mse_unedited": 1e4,
    "ssim": 1e2, "ssim_unedited": 1e2,
}


def summarize(rows: Sequence[Mapping[str, float]], scales: Mapping[str, float] = SCALES) -> dict[str, float]:
    """Mean over the rows of each metric, skipping NaN (PIE-Bench, cure-lab/PnPInversion#10), times its
    scale; for each metric also ``"<name>_nan_skipped"``, the number of NaN rows left out. Non-numeric
    entries (image ids, prompts) are ignored. A metric that is NaN in every row averages to NaN."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    summary: dict[str, float] = {}
    for name, column in values.items():
        kept = [v for v in column if not math.isnan(v)]
        summary[name] = sum(kept) / len(kept) * scales.get(name, 1.0) if kept else float("nan")
        summary[f"{name}_nan_skipped"] = len(column) - len(kept)
    return summary


@dataclass(frozen=True)
class _Spec:
    model: str | None  # the Metrics argument the metric needs, if any
    inputs: tuple[str, ...]  # the compute() arguments it needs
    definition: str


_UNEDITED = ("on source × (1 − mask) vs edited × (1 − mask) (edited region zeroed, not excluded); "
             "NaN when the mask covers the whole image")
SPECS: dict[str, _Spec] = {
    "psnr": _Spec(None, (), "PSNR in dB, 10·log10(1/MSE), data range 1 (torchmetrics PeakSignalNoiseRatio)"),
    "ssim": _Spec(None, (), "SSIM, 11×11 Gaussian σ 1.5, K1 0.01, K2 0.03, data range 1 (torchmetrics)"),
    "mse": _Spec(None, (), "mean squared error over pixels and channels on [0, 1] (torchmetrics MeanSquaredError)"),
    "l1": _Spec(None, (), "mean absolute error over pixels and channels on [0, 1] (MagicBrush/Emu Edit L1)"),
    "l2": _Spec(None, (), "mean squared error on [0, 1], no square root (MagicBrush L2 = nn.MSELoss)"),
    "lpips": _Spec("lpips_network", (), "LPIPS on images mapped to [-1, 1] (PIE-Bench: SqueezeNet)"),
    "psnr_unedited": _Spec(None, ("mask",), "psnr " + _UNEDITED),
    "ssim_unedited": _Spec(None, ("mask",), "ssim " + _UNEDITED),
    "mse_unedited": _Spec(None, ("mask",), "mse " + _UNEDITED),
    "lpips_unedited": _Spec("lpips_network", ("mask",), "lpips " + _UNEDITED),
    "clip_i": _Spec("clip", (), "cosine of CLIP image embeddings, source vs edited (MagicBrush CLIP-I: "
                                "pass the ground-truth image as source)"),
    "clip_im": _Spec("clip", (), "cosine of CLIP image embeddings, input vs edited (Emu Edit CLIP_im)"),
    "clip_t": _Spec("clip", ("target_caption",), "cosine of CLIP embeddings, edited image vs target_caption "
                                                 "(MagicBrush CLIP-T)"),
    "clip_out": _Spec("clip", ("target_caption",), "cosine of CLIP embeddings, edited image vs output caption "
                                                   "(Emu Edit CLIP_out)"),
    "clip_dir": _Spec("clip", ("source_caption", "target_caption"),
                      "cosine of (edited − source) unit CLIP image embeddings and (target − source) unit "
                      "caption embeddings; 0 if either change is zero (Emu Edit CLIP_dir)"),
    "clip_whole": _Spec("clip", ("target_prompt",), "100·max(cos, 0), edited image vs target_prompt without "
                                                    "brackets (PIE-Bench 'Whole', torchmetrics CLIPScore)"),
    "clip_edited": _Spec("clip", ("target_prompt", "mask"), "100·max(cos, 0), edited × mask vs target_prompt "
                                                            "without brackets; NaN for an empty mask "
                                                            "(PIE-Bench 'Edited')"),
    "clip_source": _Spec("clip", ("source_prompt",), "100·max(cos, 0), source image vs source_prompt without "
                                                     "brackets (PIE-Bench's source-image CLIP score)"),
    "dino": _Spec("dino", (), "cosine of DINO CLS embeddings (last layer, after the final layer norm), "
                              "source vs edited"),
    "structure_distance": _Spec("structure_model", (),
                                "MSE between cosine self-similarity matrices of the last layer's keys (CLS "
                                "included, heads concatenated), source vs edited (PIE-Bench)"),
}
KNOWN_METRICS = tuple(SPECS)

_PIXEL_METRICS = {"psnr": psnr, "ssim": ssim, "mse": mse, "l1": l1, "l2": l2}


class _Batch:
    """One compute() call's inputs; CLIP embeddings that several metrics share are computed once."""

    def __init__(self, clip: tuple | None, source, edited, mask, texts: dict[str, list[str]]):
        self.clip, self.source, self.edited, self.mask, self.texts = clip, source, edited, mask, texts
        self._cache: dict[str, torch.Tensor] = {}

    def clip_image(self, which: str) -> torch.Tensor:
        """Unit CLIP embeddings of ``"source"`` or ``"edited"`` (both encoded in one pass)."""
        if which not in self._cache:
            features = clip_image_features(torch.cat([self.source, self.edited]), *self.clip)
            self._cache["source"], self._cache["edited"] = features.chunk(2)
        return self._cache[which]

    def clip_text(self, name: str) -> torch.Tensor:
        """Unit CLIP embeddings of the texts given as ``name`` (e.g. ``"target_caption"``)."""
        if name not in self._cache:
            self._cache[name] = clip_text_features(self.texts[name], *self.clip)
        return self._cache[name]


class Metrics:
    """The metrics ``names`` with the models they need, computed per image by :meth:`compute`.

    ``clip`` and ``dino`` are ``(model, processor)`` pairs (a transformers ``CLIPModel`` with its
    ``CLIPProcessor``; a ``ViTModel``/``Dinov2Model`` with its image processor); ``lpips_network`` an
    :class:`LPIPSNetwork` (PIE-Bench's is :func:`load_squeezenet_lpips`); ``structure_model`` a transformers
    ViT (PIE-Bench's is DINO ViT-B/8). The ``*_id`` strings name those backbones in :meth:`describe`; the
    defaults are what users should load (``openai/clip-vit-large-patch14``, ``facebook/dino-vitb8``).
    """

    def __init__(self, names: Sequence[str], clip: tuple | None = None, dino: tuple | None = None,
                 lpips_network: LPIPSNetwork | None = None, structure_model: torch.nn.Module | None = None,
                 clip_id: str = CLIP_ID, dino_id: str = DINO_ID, lpips_id: str = LPIPS_ID,
                 structure_id: str = DINO_ID):
        if isinstance(names, str) or not names:
            raise ValueError(f"names must be a non-empty list of metric names, got {names!r}")
        unknown = [n for n in names if n not in SPECS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known metrics: {', '.join(KNOWN_METRICS)}")
        for argument, pair in (("clip", clip), ("dino", dino)):
            if pair is not None and not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"{argument} must be a (model, processor) tuple, got {type(pair).__name__}")
        self.names = list(dict.fromkeys(names))
        self.clip, self.dino, self.lpips_network, self.structure_model = clip, dino, lpips_network, structure_model
        self.ids = {"clip": clip_id, "dino": dino_id, "lpips_network": lpips_id, "structure_model": structure_id}
        for name in self.names:
            model = SPECS[name].model
            if model is not None and getattr(self, model) is None:
                raise ValueError(f"metric {name!r} needs the {model} argument of Metrics, which was not given")

    @torch.no_grad()
    def compute(self, source: torch.Tensor, edited: torch.Tensor, *, source_prompt=None, target_prompt=None,
                source_caption=None, target_caption=None, mask: torch.Tensor | None = None) -> list[dict[str, float]]:
        """One dict {metric name: value} per image. ``source`` is the reference image: the input image on
        PIE-Bench and Emu Edit, the ground-truth edit for MagicBrush's L1/L2/CLIP-I/DINO. Prompts (PIE-Bench,
        brackets stripped) and captions (Emu Edit, MagicBrush) are a string or one string per image."""
        _check_images(source, edited)
        given = {"source_prompt": source_prompt, "target_prompt": target_prompt, "source_caption": source_caption,
                 "target_caption": target_caption, "mask": mask}
        needed = {i for name in self.names for i in SPECS[name].inputs}
        missing = sorted(i for i in needed if given[i] is None)
        if missing:
            users = [n for n in self.names if set(SPECS[n].inputs) & set(missing)]
            raise ValueError(f"metrics {users} need {', '.join(missing)}, which compute() was not given")
        if mask is not None:
            mask = as_mask(mask, source)
        texts = {k: as_texts(v, source.shape[0], k) for k, v in given.items() if k != "mask" and v is not None}
        for prompt in ("source_prompt", "target_prompt"):
            if prompt in texts:
                texts[prompt] = [strip_brackets(p) for p in texts[prompt]]
        batch = _Batch(self.clip, source, edited, mask, texts)
        values = {name: self._metric(name, batch).double().cpu() for name in self.names}
        return [{name: values[name][i].item() for name in self.names} for i in range(source.shape[0])]

    def _pixel_metric(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return partial(lpips, network=self.lpips_network) if name == "lpips" else _PIXEL_METRICS[name]

    def _metric(self, name: str, b: _Batch) -> torch.Tensor:
        if name.endswith("_unedited"):
            return on_unedited_region(self._pixel_metric(name.removesuffix("_unedited")), b.source, b.edited, b.mask)
        if name in _PIXEL_METRICS or name == "lpips":
            return self._pixel_metric(name)(b.source, b.edited)
        if name in ("clip_i", "clip_im"):
            return (b.clip_image("source") * b.clip_image("edited")).sum(-1)
        if name in ("clip_t", "clip_out"):
            return (b.clip_image("edited") * b.clip_text("target_caption")).sum(-1)
        if name == "clip_dir":
            return direction_similarity(b.clip_image("edited") - b.clip_image("source"),
                                        b.clip_text("target_caption") - b.clip_text("source_caption"))
        if name == "clip_whole":
            return 100 * (b.clip_image("edited") * b.clip_text("target_prompt")).sum(-1).clamp(min=0)
        if name == "clip_source":
            return 100 * (b.clip_image("source") * b.clip_text("source_prompt")).sum(-1).clamp(min=0)
        if name == "clip_edited":
            return clip_edited_score(b.edited, b.mask, b.texts["target_prompt"], *self.clip)
        if name == "dino":
            return dino_similarity(b.source, b.edited, *self.dino)
        return structure_distance(b.source, b.edited, self.structure_model)

    def describe(self) -> dict:
        """Every choice behind the numbers, JSON-serialisable, for every result file: backbone ids and
        classes, processors' configurations, data range, masks, prompts, and the table scalings."""
        from .. import __version__

        used = {SPECS[n].model for n in self.names} - {None}
        backbones = {}
        for argument in sorted(used):
            value = getattr(self, argument)
            model, processor = value if isinstance(value, tuple) else (value, None)
            backbones[argument] = {"id": self.ids[argument], "class": type(model).__name__}
            if processor is not None:
                backbones[argument]["processor"] = _processor_config(processor)
        if "structure_model" in used:
            backbones["structure_model"]["preprocessing"] = (
                "8-bit values (0–255, no /255: PIE-Bench's quirk), bilinear Resize(224, max_size=480) without "
                "antialiasing, ImageNet mean/std normalisation; keys of the last attention layer")
        if "lpips_network" in used:
            backbones["lpips_network"]["preprocessing"] = "images mapped to [-1, 1], then LPIPS's shift/scale layer"
        return {
            "metrics": {n: {"definition": SPECS[n].definition, "backbone": self.ids.get(SPECS[n].model),
                            "scale": SCALES.get(n, 1.0)} for n in self.names},
            "backbones": backbones,
            "images": "float [B, 3, H, W] in [0, 1] (data range 1.0); rounded to 8 bits before the CLIP and DINO "
                      "processors and the structure distance, as benchmark images are PNG files",
            "mask": "1 = edited region; PIE-Bench masks have all four 1-px borders set to 1; unedited-region "
                    "metrics multiply both images by (1 − mask) and are NaN when nothing is unedited",
            "prompts": "PIE-Bench prompts with '[' and ']' removed; captions used as given",
            "summary": "mean over images of non-NaN values, times the scale (PnPInversion/DSI table headers)",
            "versions": {"diffusers_uip2p": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "torchmetrics": torchmetrics.__version__},
        }


def _processor_config(processor) -> dict:
    """The class and settings of a processor's image processor (resize, crop, mean, std, resample)."""
    image_processor = getattr(processor, "image_processor", processor)
    config = {"class": type(processor).__name__, "image_processor_class": type(image_processor).__name__}
    if hasattr(image_processor, "to_json_string"):
        config["image_processor"] = json.loads(image_processor.to_json_string())
    return config


def _check_images(source: torch.Tensor, edited: torch.Tensor) -> None:
    for name, images in (("source", source), ("edited", edited)):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{name} must be a float tensor [B, 3, H, W] in [0, 1], got {shape}")
        if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
            raise ValueError(f"{name} must hold floats in [0, 1], got {images.dtype} in "
                             f"[{images.min().item():.3g}, {images.max().item():.3g}]")
    if source.shape != edited.shape:
        raise ValueError(f"source and edited must have the same size, got {tuple(source.shape)} and "
                         f"{tuple(edited.shape)}")


__all__ = [
    "KNOWN_METRICS", "LPIPS_ID", "LPIPSNetwork", "Metrics", "SCALES", "SPECS", "as_mask", "clip_dir",
    "clip_edited_score", "clip_i", "clip_score", "clip_t", "decode_pie_mask", "dino_features", "dino_similarity",
    "edited_region", "empty_edited_region", "empty_unedited_region", "l1", "l2", "load_squeezenet_lpips", "lpips",
    "mse", "on_unedited_region", "psnr", "squeezenet_lpips_network", "ssim", "strip_brackets", "structure_distance",
    "summarize", "unedited_region",
]
