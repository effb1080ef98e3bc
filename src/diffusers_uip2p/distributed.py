"""Several processes on a machine without an accelerator."""

from __future__ import annotations

import os

import torch


def cpu_process_group_needed() -> bool:
    """True when ``accelerate launch`` (torchrun) started several processes on a machine with no accelerator.

    Accelerate forms a CPU (gloo) group only when asked for the CPU explicitly (``Accelerator(cpu=True)``,
    ``PartialState(cpu=True)``); otherwise every process runs alone and believes it is the only one.
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
