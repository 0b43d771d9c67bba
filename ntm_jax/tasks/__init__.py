"""The tasks of the paper's Sec. 4, behind one interface (`Task`)."""

from ntm_jax.tasks.associative_recall import AssociativeRecallTask
from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.tasks.copy import CopyTask
from ntm_jax.tasks.ngrams import DynamicNGramsTask
from ntm_jax.tasks.priority_sort import PrioritySortTask
from ntm_jax.tasks.repeat_copy import RepeatCopyTask

# Every task by its `name`, as recorded in a run's config.json.
TASKS = {task.name: task for task in (CopyTask, RepeatCopyTask, AssociativeRecallTask,
                                      DynamicNGramsTask, PrioritySortTask)}

__all__ = ['AssociativeRecallTask', 'Batch', 'CopyTask', 'DynamicNGramsTask',
           'PrioritySortTask', 'RepeatCopyTask', 'TASKS', 'Task']
