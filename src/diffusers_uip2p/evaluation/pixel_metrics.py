"""Pixel metrics per image, on float [B, C, H, W] images in [0, 1] (or [0, data_range]), returning [B] float64.

PIE-Bench computes PSNR, SSIM and MSE with torchmetrics on one image at a time (cure-lab/PnPInversion
``evaluation/matrics_calculator.py``); MagicBrush computes L1 and L2 with ``nn.L1Loss``/``nn.MSELoss`` on
``ToTensor`` images (OSU-NLP-Group/MagicBrush ``evaluation/image_eval.py``), and Emu Edit reports the same L1.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ..checks import check_finite, check_number


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Same shape and finite: the two images every pixel metric compares."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_finite(pred, "pred")  # a NaN image would otherwise score NaN, and a summary of NaN says nothing
    check_finite(target, "target")


def _diff(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _check_pair(pred, target)
    return (pred.double() - target.double()).flatten(1)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over pixels and channels (PIE-Bench: torchmetrics ``MeanSquaredError`` on [0, 1])."""
    return (_diff(pred, target) ** 2).mean(1)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over pixels and channels on [0, 1]: MagicBrush's and Emu Edit's L1
    (``nn.L1Loss`` on ``ToTensor`` images)."""
    return _diff(pred, target).abs().mean(1)


def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MagicBrush's L2: ``nn.MSELoss`` on ``ToTensor`` images, i.e. the mean *squared* error on [0, 1] with
    no square root, so it equals :func:`mse` (their tables' L2 ≈ 0.02 for L1 ≈ 0.06 reflects that)."""
    return mse(pred, target)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB = 10·log10(data_range² / MSE) per image (torchmetrics ``PeakSignalNoiseRatio(data_range=1.0)``
    on one image, as PIE-Bench calls it); +inf for identical images."""
    check_number(data_range, "data_range", low=0, low_open=True)
    return 10 * torch.log10(data_range**2 / mse(pred, target))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image with torchmetrics' conventions (PIE-Bench's ``StructuralSimilarityIndexMeasure``):
    11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, mean over channels and valid pixels."""
    _check_pair(pred, target)
    return structural_similarity_index_measure(pred.float(), target.float(), data_range=data_range,
                                               reduction="none").double()
