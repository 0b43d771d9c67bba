"""The shared experiment runner: config, model factory, train state and step, evaluation,
workdir records, checkpoints, metrics, reporting, figures, and the loop that runs them."""

from ntm_jax.training.backend import AcceleratorUnavailableError
from ntm_jax.training.backend import select_accelerator
from ntm_jax.training.backend import tune_cpu_compiler
from ntm_jax.training.backend import usable_cores
from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.loop import NonFiniteLossError
from ntm_jax.training.loop import run
from ntm_jax.training.workdir import WorkdirBusyError
from ntm_jax.training.workdir import WorkdirMismatchError

__all__ = [
    'AcceleratorUnavailableError',
    'ExperimentConfig',
    'NonFiniteLossError',
    'WorkdirBusyError',
    'WorkdirMismatchError',
    'run',
    'select_accelerator',
    'tune_cpu_compiler',
    'usable_cores',
]
