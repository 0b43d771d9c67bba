"""The tasks of the paper's Sec. 4, behind one interface (`Task`)."""

from ntm_jax.tasks.associative_recall import AssociativeRecallTask
from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.tasks.copy import CopyTask
from ntm_jax.tasks.ngrams import DynamicNGramsTask
from ntm_jax.tasks.priority_sort import PrioritySortTask
from ntm_jax.tasks.repeat_copy import RepeatCopyTask

# Every task by its `name`, as recorded in a run's config.json.
TASKS = {
    task.name: task
    for task in (
        CopyTask,
        RepeatCopyTask,
        AssociativeRecallTask,
        DynamicNGramsTask,
        PrioritySortTask,
    )
}


def make_task(name: str, settings: dict | None = None) -> Task:
  """A task from its name and settings (`Task.settings`) as a run's config.json holds them.

  JSON turns tuples into lists; they are turned back. No settings: the task's defaults
  (config.json files from before the settings were recorded).
  """
  if name not in TASKS:
    raise ValueError(f'task must be one of {", ".join(TASKS)}; got {name!r}.')

  def as_tuples(value):
    return tuple(as_tuples(item) for item in value) if isinstance(value, list) else value

  return TASKS[name](**{key: as_tuples(value) for key, value in (settings or {}).items()})


__all__ = [
    'AssociativeRecallTask',
    'Batch',
    'CopyTask',
    'DynamicNGramsTask',
    'PrioritySortTask',
    'RepeatCopyTask',
    'TASKS',
    'Task',
    'make_task',
]
