from .scheduling_dual_schedule import (
    BRANCH_RULES,
    DualScheduleInversionScheduler,
    DualScheduleSchedulerOutput,
    DualScheduleState,
)

__all__ = ["BRANCH_RULES", "DualScheduleInversionScheduler", "DualScheduleSchedulerOutput", "DualScheduleState"]
