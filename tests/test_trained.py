"""The shipped trained runs (`trained/`) still score what they scored when shipped.

Each run's latest checkpoint is re-evaluated on the same fixed evaluation sequences and
compared with its `expected.json` sequence by sequence, within the float noise that
`ntm_jax.training.regression.differences` allows between machines; a change to the cell's maths, the
tasks or the metrics moves most sequences and fails here.
"""

import json
import os

import pytest

from ntm_jax.training import regression

# Slow: they re-evaluate the shipped runs.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED = os.path.join(ROOT, 'trained')
RUNS = (
    sorted(
        name
        for name in os.listdir(TRAINED)
        if os.path.exists(os.path.join(TRAINED, name, 'expected.json'))
    )
    if os.path.isdir(TRAINED)
    else []
)


def test_every_task_has_a_shipped_run():
  from ntm_jax.tasks import TASKS

  assert {f'{task}_ntm' for task in TASKS} <= set(RUNS)


@pytest.mark.parametrize('name', RUNS)
def test_shipped_run_keeps_its_metrics(name):
  with open(os.path.join(TRAINED, name, 'expected.json')) as f:
    expected = json.load(f)
  measured = regression.evaluate_per_sequence(
      os.path.join(TRAINED, name), expected['eval_batch_size']
  )
  assert measured.keys() == expected['per_sequence'].keys()
  assert regression.differences(expected['per_sequence'], measured) == []


def test_the_comparison_tells_float_noise_from_a_broken_cell():
  """Rounding like another machine's passes; a wrong equation fails (copy, one draw)."""
  broken = ('Eq. 9 left out (gamma = 1)', 'Eq. 7 with the gate swapped (1 - g)')
  verdicts = dict(
      regression.check_run(
          os.path.join(TRAINED, 'copy_ntm'), noise=1e-6, draws=1, broken=broken
      )
  )
  assert verdicts.keys() == {'as shipped', 'noise 1e-06', *broken}
  assert verdicts['as shipped'] == 'passes'
  assert verdicts['noise 1e-06'] == '1 of 1 draws pass'
  assert all(verdicts[label].startswith('fails') for label in broken)


def test_every_broken_equation_of_the_tolerance_check_changes_the_model():
  """The broken variants reach the cell (a variant that did not would pass unnoticed)."""
  import jax
  import numpy as np

  from ntm_jax import NTMCell
  from ntm_jax import models

  model = models.NTM(
      NTMCell(
          features=3,
          memory_size=16,
          word_size=6,
          controller_features=12,
          memory_init='random',
      )
  )
  xs = jax.random.uniform(jax.random.key(0), (2, 9, 4))
  params = model.init(jax.random.key(1), xs)
  intact = model.apply(params, xs)
  for label, fields in regression.broken_equations().items():
    broken = model.clone(cell=model.cell.clone(**fields)).apply(params, xs)
    assert np.abs(broken - intact).max() > 1e-4, label
