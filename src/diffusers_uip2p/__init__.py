"""diffusers-uip2p: UIP2P instruction editing and exact Dual-Schedule Inversion for 🤗 diffusers.

Every module that defines a saved component is imported here: diffusers resolves non-diffusers
components from ``sys.modules`` when it loads a pipeline folder.
"""

from .classifier import EditTaskClassifier
from .pipelines import (
    AutoEditPipeline,
    AutoEditPipelineOutput,
    DualScheduleInversionOutput,
    UIP2PPipeline,
    UIP2PPipelineOutput,
    UIP2PSequenceOutput,
    convert_pipeline_folder,
    convert_unet_to_instruct_pix2pix,
)
from .schedulers import DualScheduleInversionScheduler, DualScheduleSchedulerOutput, DualScheduleState

__version__ = "0.1.0.dev0"

__all__ = [
    "AutoEditPipeline",
    "AutoEditPipelineOutput",
    "DualScheduleInversionOutput",
    "DualScheduleInversionScheduler",
    "DualScheduleSchedulerOutput",
    "DualScheduleState",
    "EditTaskClassifier",
    "UIP2PPipeline",
    "UIP2PPipelineOutput",
    "UIP2PSequenceOutput",
    "convert_pipeline_folder",
    "convert_unet_to_instruct_pix2pix",
]
