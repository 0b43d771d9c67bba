"""Tasks of the paper's Sec. 4, behind one interface (`Task`)."""

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.tasks.copy import CopyTask

__all__ = ['Batch', 'CopyTask', 'Task']
