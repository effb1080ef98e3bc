from .inversion import DualScheduleInversionMixin
from .outputs import AutoEditPipelineOutput, DualScheduleInversionOutput
from .pipeline_auto_edit import AutoEditPipeline

__all__ = ["AutoEditPipeline", "AutoEditPipelineOutput", "DualScheduleInversionMixin", "DualScheduleInversionOutput"]
