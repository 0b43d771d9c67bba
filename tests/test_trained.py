"""The shipped trained runs (`trained/`) still score what they scored when shipped.

Each run is re-evaluated from its checkpoint with `--eval_only` semantics on the same
fixed evaluation sequences; a change to the cell's maths, the tasks or the metrics moves
these numbers and fails here.
"""

import json
import os

import pytest

from experiments import ship

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED = os.path.join(ROOT, 'trained')
RUNS = sorted(name for name in os.listdir(TRAINED)
              if os.path.exists(os.path.join(TRAINED, name, 'expected.json'))
              ) if os.path.isdir(TRAINED) else []


def test_every_task_has_a_shipped_run():
  from ntm_jax.tasks import TASKS
  assert {f'{task}_ntm' for task in TASKS} <= set(RUNS)


@pytest.mark.parametrize('name', RUNS)
def test_shipped_run_keeps_its_metrics(name):
  with open(os.path.join(TRAINED, name, 'expected.json')) as f:
    expected = json.load(f)
  results = ship.evaluate(os.path.join(TRAINED, name),
                          expected['eval_batch_size'])['results']
  assert results.keys() == expected['results'].keys()
  # Same sequences, same parameters: only float reassociation between XLA builds may move
  # the numbers, and at most flip an output bit that sat on the 0.5 threshold.
  one_bit = 1.0 / expected['eval_batch_size']
  for row, values in expected['results'].items():
    for metric, value in values.items():
      tolerance = dict(abs=2 * one_bit) if metric == 'bit_errors' else dict(rel=1e-3,
                                                                             abs=2e-3)
      assert results[row][metric] == pytest.approx(value, **tolerance), (row, metric)
