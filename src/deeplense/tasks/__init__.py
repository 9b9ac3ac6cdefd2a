"""Tasks: every kind of learning as one registered module (see :mod:`deeplense.tasks.base`)."""

from deeplense.tasks import anomaly, classification, mae, regression, simclr  # noqa: F401 - registers the tasks
from deeplense.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
