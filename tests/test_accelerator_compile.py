"""The training steps compile for GPUs and TPUs on this CPU, within their kernel bounds.

Deviceless compilation (`benchmarks.accelerator_compile`) needs the compilers of the
`targets` extra, which CI installs: there a missing one fails the test, elsewhere it
skips.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ('copy', 'repeat_copy', 'associative_recall', 'ngrams', 'priority_sort')
# Kernels one batch-1 copy training step launches on an H100 (docs/BENCHMARKS.md,
# "Kernels per step"): JAX's own residuals, one write each per time step, took twice this.
COPY_STEP_KERNELS = 3000
# Members ride along: a population's step launches at most this much more than one run's.
POPULATION_KERNELS_RATIO = 1.1

pytestmark = pytest.mark.slow


def _require(module: str) -> None:
  if importlib.util.find_spec(module) is None:
    message = f"{module} is missing: pip install -e '.[targets]'"
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)


def _compile(workload: str, *flags: str) -> list[dict]:
  """The benchmark's rows for one workload (its child process, as the benchmark runs it)."""
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'benchmarks.accelerator_compile',
          f'--worker={workload}',
          *flags,
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=900,
      env=dict(os.environ, PYTHONPATH=ROOT),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert rows and not [row['error'] for row in rows if 'error' in row]
  return rows


def test_the_copy_step_compiles_for_an_h100_within_its_kernel_bound():
  _require('jax_plugins.xla_cuda13')
  one, population = _compile('copy', '--targets=h100', '--models=ntm', '--members=1,16')
  assert one['total'] <= COPY_STEP_KERNELS, one
  assert population['total'] <= POPULATION_KERNELS_RATIO * one['total'], population
  # The forward time step writes its saved values once, not once per value.
  assert one['forward_per_step'] < one['backward_per_step'] + 20, one
  (rnn,) = _compile('rnn', '--targets=h100', '--batch_sizes=1')
  assert rnn['total'] <= COPY_STEP_KERNELS, rnn


def test_every_experiments_step_compiles_for_a_tpu_and_a_population_fits_its_memory():
  _require('libtpu')
  for experiment in EXPERIMENTS:
    rows = _compile(experiment, '--targets=tpu_v5e', '--members=1')
    assert {row['model'] for row in rows} == {'ntm', 'lstm'}
    assert all(row['fits'] and row['total'] > 0 for row in rows), rows
  (population,) = _compile('copy', '--targets=tpu_v5e', '--models=ntm', '--members=256')
  assert population['fits'] and population['peak_bytes'] > 256 * 2**20, population
