from .scheduling_dual_schedule import DualScheduleInversionScheduler, DualScheduleSchedulerOutput, DualScheduleState

__all__ = ["DualScheduleInversionScheduler", "DualScheduleSchedulerOutput", "DualScheduleState"]
