from .elo import EloEstimate, EloResult, elo_confidence, elo_ratings, leaderboard_markdown, plot_elo
from .lpips import LPIPSNetwork, load_squeezenet_lpips
from .metrics import KNOWN_METRICS, SCALES, Metrics, decode_pie_mask, strip_brackets, summarize
from .reconstruction import (
    CountingModelFn,
    ddim_round_trip,
    ddim_steps_for_same_budget,
    dsi_round_trip,
    psnr,
    relative_error,
)

# `psnr` here is reconstruction's batch-mean PSNR (a float); the per-image metric is `metrics.psnr`.
__all__ = ["CountingModelFn", "ddim_round_trip", "ddim_steps_for_same_budget", "dsi_round_trip", "psnr",
           "relative_error", "EloEstimate", "EloResult", "elo_confidence", "elo_ratings", "leaderboard_markdown",
           "plot_elo", "LPIPSNetwork", "load_squeezenet_lpips", "KNOWN_METRICS", "SCALES", "Metrics",
           "decode_pie_mask", "strip_brackets", "summarize"]

# Benchmark readers and runners (python -m diffusers_uip2p.evaluation).
from .benchmarks import EditItem, EditTurn, EmuEdit, MagicBrush, PieBench, ShapesBenchmark  # noqa: E402
from .editors import InstructionEditor, PromptEditor, editor_for, load_pipeline  # noqa: E402
from .runners import ShardedRun, run_benchmark, run_reconstruction, run_shapes  # noqa: E402

__all__ += ["EditItem", "EditTurn", "EmuEdit", "MagicBrush", "PieBench", "ShapesBenchmark", "InstructionEditor",
            "PromptEditor", "ShardedRun", "editor_for", "load_pipeline", "run_benchmark", "run_reconstruction",
            "run_shapes"]
