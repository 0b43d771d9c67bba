"""The shared experiment runner: config, optimiser, loop, checkpoints, metrics, figures."""

from ntm_jax.training.backend import AcceleratorUnavailableError
from ntm_jax.training.backend import select_accelerator
from ntm_jax.training.backend import tune_cpu_compiler
from ntm_jax.training.backend import usable_cores
from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.loop import NonFiniteLossError
from ntm_jax.training.loop import WorkdirBusyError
from ntm_jax.training.loop import WorkdirMismatchError
from ntm_jax.training.loop import run

__all__ = ['AcceleratorUnavailableError', 'ExperimentConfig', 'NonFiniteLossError',
           'WorkdirBusyError', 'WorkdirMismatchError', 'run', 'select_accelerator',
           'tune_cpu_compiler', 'usable_cores']
