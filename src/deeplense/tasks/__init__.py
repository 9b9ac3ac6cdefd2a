"""Tasks: every kind of learning as one registered module (see :mod:`deeplense.tasks.base`)."""

from typing import Any

from deeplense.core.contract import ModelContract
from deeplense.tasks import classification, regression  # noqa: F401 - registers the tasks
from deeplense.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task", "create_task"]


def create_task(contract: ModelContract, train: dict[str, Any]) -> Task:
    """The task of ``contract`` (a :class:`~deeplense.core.contract.ModelContract`), networks built."""
    return TASKS.create(contract.task, contract, train)
