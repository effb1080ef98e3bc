from .conversion import convert_pipeline_folder, convert_unet_to_instruct_pix2pix
from .inversion import DualScheduleInversionMixin
from .outputs import AutoEditPipelineOutput, DualScheduleInversionOutput
from .pipeline_auto_edit import AutoEditPipeline
from .pipeline_uip2p import UIP2PPipeline, UIP2PPipelineOutput, UIP2PSequenceOutput, reversibility_scores

__all__ = [
    "AutoEditPipeline",
    "AutoEditPipelineOutput",
    "DualScheduleInversionMixin",
    "DualScheduleInversionOutput",
    "UIP2PPipeline",
    "UIP2PPipelineOutput",
    "UIP2PSequenceOutput",
    "convert_pipeline_folder",
    "convert_unet_to_instruct_pix2pix",
    "reversibility_scores",
]
