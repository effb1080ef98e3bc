from .foreign_config import scheduler_from_config
from .scheduling_dual_schedule import (
    BRANCH_RULES,
    DualScheduleInversionScheduler,
    DualScheduleSchedulerOutput,
    DualScheduleState,
)

__all__ = ["BRANCH_RULES", "DualScheduleInversionScheduler", "DualScheduleSchedulerOutput", "DualScheduleState",
           "scheduler_from_config"]
