"""The training loop both trainers share (pretraining, detector fine-tuning) and its parts.

Imports nothing of a stage (``ctx_core.pretext``, ``ctx_core.detection``) or of
``ctx_core.config``: trainers pass their settings in as :class:`LoopSettings`.
"""

from ctx_core.training.loop import LoopResult, LoopSettings, Method, NonFiniteLoss, StepSums, fit
from ctx_core.training.metrics import MetricLogger, SmoothedValue
from ctx_core.training.schedule import Schedule, lr_factor, milestone_steps

__all__ = ["LoopResult", "LoopSettings", "Method", "MetricLogger", "NonFiniteLoss", "Schedule", "SmoothedValue",
           "StepSums", "fit", "lr_factor", "milestone_steps"]
