"""experiments.tools.seeds: the table over separately trained runs."""

import os
import subprocess
import sys

import pytest

from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    batch_size=2,
    memory_size=8,
    word_size=4,
    controller_features=16,
    eval_batch_size=4,
    plots=False,
    log_every=5,
    eval_every=5,
    checkpoint_every=5,
    train_steps=10,
)


def _tool(*args):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.tools.seeds', *args],
      cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True,
      text=True,
      timeout=300,
  )


@pytest.mark.slow
def test_the_table_has_a_row_per_run_and_the_worst_over_them(tmp_path):
  task = CopyTask(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))
  reports = [
      run(
          ExperimentConfig(workdir=str(tmp_path / f'seed{seed}'), seed=seed, **TINY), task
      )
      for seed in (3, 8)
  ]
  result = _tool(str(tmp_path / 'seed3'), str(tmp_path / 'seed8'))
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {
      line.split('|')[0].strip(): line.split('|')[2:]
      for line in result.stdout.splitlines()
      if '|' in line
  }
  labels = list(reports[0]['results'])  # the columns: training mix, lengths 2 and 5
  errors = [[r['results'][label]['bit_errors'] for label in labels] for r in reports]
  assert errors[0] != errors[1]
  for report, row in zip(reports, errors):
    assert [float(v) for v in rows[str(report['seed'])]] == pytest.approx(row, abs=1e-3)
  for name, over in (('mean', lambda a, b: (a + b) / 2), ('worst', max)):
    assert [float(v) for v in rows[name]] == pytest.approx(
        [over(a, b) for a, b in zip(*errors)], abs=1e-3
    )
  missing = _tool(str(tmp_path / 'nothing'))
  assert missing.returncode != 0
  assert missing.stderr.strip().splitlines() == [
      f'error: {tmp_path / "nothing"} has no readable report.json; name a finished run.'
  ]
