from .reconstruction import (
    CountingModelFn,
    ddim_round_trip,
    ddim_steps_for_same_budget,
    dsi_round_trip,
    psnr,
    relative_error,
)

__all__ = ["CountingModelFn", "ddim_round_trip", "ddim_steps_for_same_budget", "dsi_round_trip", "psnr", "relative_error"]
