"""The tasks of the paper's Sec. 4, behind one interface (`Task`)."""

from ntm_jax.tasks.associative_recall import AssociativeRecallTask
from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.tasks.copy import CopyTask
from ntm_jax.tasks.ngrams import DynamicNGramsTask
from ntm_jax.tasks.priority_sort import PrioritySortTask
from ntm_jax.tasks.repeat_copy import RepeatCopyTask

__all__ = ['AssociativeRecallTask', 'Batch', 'CopyTask', 'DynamicNGramsTask',
           'PrioritySortTask', 'RepeatCopyTask', 'Task']
