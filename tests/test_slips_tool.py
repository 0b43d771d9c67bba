"""experiments.tools.slips: slips among a run's check sequences."""

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.tools import slips
from ntm_jax.tasks import CopyTask
from ntm_jax.tasks.base import Batch
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import evaluation
from ntm_jax.training import loop
from ntm_jax.training import metrics
from ntm_jax.training import run
from ntm_jax.training.train_state import Keys

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
    memory_init='random',
)


class _Fixed:
  """A stand-in model whose outputs are given."""

  def __init__(self, logits):
    self.logits = logits

  def apply(self, params, inputs):
    del params, inputs
    return self.logits


def test_a_slip_is_a_sequence_with_more_than_the_fraction_of_its_scored_bits_wrong():
  # Given 4 sequences of 10 scored steps x 2 bits (20 bits each) and one unscored step,
  # wrong on 20, 3, 1 and 0 bits, and on the unscored step everywhere, then with a
  # fraction of 0.1 (2 bits) two are slips, three have an error, the worst has 20.
  targets = np.zeros((4, 11, 2), np.float32)
  mask = np.ones((4, 11), np.float32)
  mask[:, 0] = 0.0
  logits = -np.ones((4, 11, 2), np.float32)
  logits[:, 0] = 1.0  # wrong, but not scored
  logits[0, 1:] = 1.0
  logits[1, 1:3, 0], logits[1, 3, 1] = 1.0, 1.0
  logits[2, 5, 1] = 1.0
  batch = Batch(jnp.zeros((4, 11, 3)), jnp.asarray(targets), jnp.asarray(mask))
  result = slips.count_slips(_Fixed(jnp.asarray(logits)), None, batch, 0.1)
  assert result == dict(sequences=4, slips=2, any_error=3, worst=20.0)
  assert slips.count_slips(_Fixed(jnp.asarray(logits)), None, batch, 0.15)['slips'] == 1


def _tool(*args):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.tools.slips', *args],
      cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True,
      text=True,
      timeout=300,
  )


@pytest.mark.slow
def test_the_tool_counts_each_runs_and_each_members_errors_on_its_own_check_sequences(
    tmp_path,
):
  # Given a single run and a population of two (random starting memories), when the
  # tool checks 64 sequences of the hardest length, then each row's count of sequences
  # with any error equals that of the run's (member's) own check set evaluated at once
  # with its evaluated parameters, and a summary row follows.
  task = CopyTask(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))
  run(ExperimentConfig(workdir=str(tmp_path / 'single'), seed=3, **TINY), task)
  run(ExperimentConfig(workdir=str(tmp_path / 'pair'), seeds=(4, 5), **TINY), task)
  result = _tool(
      '--sequences=64',
      '--wrong_fraction=0.3',
      str(tmp_path / 'single'),
      str(tmp_path / 'pair'),
  )
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {
      m.group(1): (int(m.group(2)), int(m.group(3)))
      for m in re.finditer(
          r'^(\S+): step 10, 5: (\d+) slips in 64 sequences, (\d+) with any error',
          result.stdout,
          re.M,
      )
  }
  expected = {}
  for label, workdir, member in (
      ('single', 'single', None),
      ('pair/seed4', 'pair', 4),
      ('pair/seed5', 'pair', 5),
  ):
    config, _ = ExperimentConfig.load(str(tmp_path / workdir))
    model, params, _ = loop.restore_evaluated_params(config, task, member=member)
    batch = evaluation.eval_set(task, Keys(member or 3), 5, 64, check=True)
    errors = np.asarray(
        metrics.bit_errors_per_sequence(model.apply(params, batch.inputs), batch)
    )
    scored = np.asarray(batch.mask.sum(1)) * 3
    expected[label] = (int(np.sum(errors > 0.3 * scored)), int(np.sum(errors > 0)))
  assert rows == expected
  assert len(set(expected.values())) > 1  # the runs differ
  assert re.search(r'^3 runs: slips median', result.stdout, re.M)
  (tmp_path / 'unsaved').mkdir()
  (tmp_path / 'unsaved' / 'config.json').write_text(
      (tmp_path / 'single' / 'config.json').read_text()
  )
  unsaved = _tool(str(tmp_path / 'unsaved'))
  assert unsaved.returncode != 0
  assert unsaved.stderr.strip().splitlines() == [
      f'error: {tmp_path / "unsaved"} has no checkpoint to check '
      f'({tmp_path / "unsaved" / "checkpoints"} does not exist.)'
  ]


@pytest.mark.parametrize(
    'args, message',
    [
        ((), 'error: name one or more run workdirs, e.g. runs/copy_ntm_seed0.'),
        (('--sequences=0', '.'), 'error: --sequences must be an integer >= 1; got 0.'),
        (
            ('--wrong_fraction=1', '.'),
            'error: --wrong_fraction must be in [0, 1); got 1.0.',
        ),
        (('tests',), 'error: tests has no config.json; name a run workdir.'),
    ],
)
def test_bad_input_gets_a_one_line_error(args, message):
  result = _tool(*args)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [message]
