"""The cost spikes of converged runs, from their metrics logs (analysis.cost_spikes)."""

import os
import subprocess
import sys

from ntm_jax import analysis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _window(step, bit_errors, grad_norm, member=None, **extra):
  record = dict(
      kind='train', step=step, bit_errors=bit_errors, grad_norm=grad_norm, **extra
  )
  if member is not None:
    record['member'] = member
  return record


def _eval(step, bit_errors, member=None):
  record = dict(kind='eval', step=step, train=dict(bit_errors=bit_errors))
  if member is not None:
    record['member'] = member
  return record


def test_spikes_are_stretches_above_the_threshold_after_convergence():
  records = [
      _window(100, 30.0, 50.0),  # before converging: not a spike
      _eval(100, 0.05),
      _window(200, 0.0, 1.0),
      _window(300, 0.5, 300.0, grad_norm_max=9000.0),
      _window(400, 3.0, 1000.0),
      _window(500, 0.1, 2.0),
      _window(600, 0.0, 1.0),
      _window(700, 0.9, 50.0),
      _window(800, 0.0, 1.0),
      _window(900, 0.0, 1.0),
      _window(1000, 0.0, 1.0),
      _window(300, 9.0, 9.0, member=1),  # another member's
  ]
  baseline, spikes = analysis.cost_spikes(records)
  assert baseline == 1.0  # the median of 1, 300, 1000, 2, 1, 50, 1, 1, 1
  assert [(s['step'], s['peak_step'], s['bit_errors']) for s in spikes] == [
      (300, 400, 3.0),
      (700, 700, 0.9),
  ]
  first, second = spikes
  assert first['grad_norm_ratio'] == 1000.0 and first['before_ratio'] == 1.0
  assert first['after_ratio'] == 2.0 and first['largest_step_ratio'] == 9000.0
  assert second['after_ratio'] == 1.0 and second['largest_step_ratio'] is None


def test_a_run_counts_from_its_last_restart_and_never_converged_has_no_spikes():
  records = [
      _eval(100, 0.05),
      dict(kind='restart', step=200),
      _eval(300, 5.0),
      _window(400, 4.0, 1.0),
  ]
  assert analysis.cost_spikes(records) == (None, [])
  records += [_eval(500, 0.0), _window(600, 0.0, 2.0), _window(700, 1.0, 200.0)]
  baseline, spikes = analysis.cost_spikes(records)
  assert baseline == 101.0 and [s['step'] for s in spikes] == [700]


def test_the_spikes_tool_reads_the_shipped_copy_run():
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.tools.spikes',
          os.path.join(ROOT, 'trained', 'copy_ntm'),
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  # The shipped run's metrics.jsonl: seed 0 spikes twice after converging, at 10,800 and
  # 25,200.
  assert 'copy_ntm: 2 spike(s)' in result.stdout
  assert 'step  10800: peak   2.92 bit errors at 11200' in result.stdout
  assert '1 converged run(s), 2 spike(s)' in result.stdout
  missing = subprocess.run(
      [sys.executable, '-m', 'experiments.tools.spikes', ROOT],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert missing.returncode != 0 and 'has no metrics.jsonl' in missing.stderr
