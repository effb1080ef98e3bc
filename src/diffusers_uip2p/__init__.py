"""diffusers-uip2p: UIP2P instruction editing and exact Dual-Schedule Inversion for 🤗 diffusers.

The public classes are loaded on first use (PEP 562), so that ``import diffusers_uip2p`` and the command
line's ``--help`` do not import torch and diffusers. diffusers finds our saved components the same way: it
imports ``diffusers_uip2p`` and asks it for the class named in ``model_index.json``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"


class _QuietTorchvisionFallback(logging.Filter):
    """transformers warns, on every run without torchvision, that its image processors fall back to their
    PIL versions. Those are the ones our pipelines use, and torchvision has no CPU wheel here: nothing to act
    on, so the one message is dropped (every other transformers warning still shows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_QuietTorchvisionFallback())

_EXPORTS = {
    "AutoEditPipeline": "pipelines",
    "AutoEditPipelineOutput": "pipelines",
    "DualScheduleInversionOutput": "pipelines",
    "DualScheduleInversionScheduler": "schedulers",
    "DualScheduleSchedulerOutput": "schedulers",
    "DualScheduleState": "schedulers",
    "EditTaskClassifier": "classifier",
    "UIP2PPipeline": "pipelines",
    "UIP2PPipelineOutput": "pipelines",
    "UIP2PSequenceOutput": "pipelines",
    "convert_pipeline_folder": "pipelines",
    "convert_unet_to_instruct_pix2pix": "pipelines",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on demand
    from .classifier import EditTaskClassifier
    from .pipelines import (AutoEditPipeline, AutoEditPipelineOutput, DualScheduleInversionOutput, UIP2PPipeline,
                            UIP2PPipelineOutput, UIP2PSequenceOutput, convert_pipeline_folder,
                            convert_unet_to_instruct_pix2pix)
    from .schedulers import DualScheduleInversionScheduler, DualScheduleSchedulerOutput, DualScheduleState


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
