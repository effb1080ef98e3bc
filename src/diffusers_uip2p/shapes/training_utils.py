"""Small pieces the Shapes training scripts share: scene images as tensors, the learning-rate schedule,
and the model card every shipped model carries."""

from __future__ import annotations

import math
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from .scenes import Scene, render


def scenes_to_tensor(scenes: list[Scene]) -> torch.Tensor:
    """Rendered scenes as a float tensor in [-1, 1], shape [N, 3, 64, 64] (the VAE's input range)."""
    pixels = np.stack([np.asarray(render(scene)) for scene in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def start_run(threads: int | None, seed: int) -> str:
    """What every training script does first: torch's threads, the seed; returns the device to train on."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.02) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``floor × peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def machine() -> str:
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({threads} torch threads)"
    return f"{device}, {platform.processor() or platform.machine()}; torch {torch.__version__}"


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run (``argv`` as given to ``main``, else the process's)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def earlier_stage(folder: str | Path | None) -> str:
    """The card of the model a run continued from, kept in the new card so every stage stays reproducible."""
    card = Path(folder) / "README.md" if folder else None
    if card is None or not card.is_file():
        return ""
    text = card.read_text().replace("\n## ", "\n#### ").replace("\n# ", "\n### ")
    return "This run continued from an earlier one, whose card follows.\n\n" + text.lstrip("# ")


def write_model_card(folder: str | Path, title: str, summary: str, command: str, seed: int, seconds: float,
                     figures: dict[str, str], notes: str = "") -> None:
    """README.md with what a user needs to trust and reproduce the model."""
    lines = [f"# {title}", "", summary, "", "## Training", "", f"```\n{command}\n```", "",
             f"- seed: {seed}", f"- training time: {seconds / 60:.1f} min on {machine()}", "",
             "## Quality (measured at the end of training)", ""]
    lines += [f"- {name}: {value}" for name, value in figures.items()]
    if notes:
        lines += ["", "## Notes", "", notes]
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "README.md").write_text("\n".join(lines) + "\n")
