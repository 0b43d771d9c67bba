"""The cost spikes of converged runs and the gradient norms around them:
`python -m experiments.tools.spikes runs/copy_ntm_seed40 runs/copy_ntm_seed41 ...`.

Reads each workdir's metrics.jsonl (every member of a population) and prints, per run,
its spikes after convergence (`ntm_jax.analysis.cost_spikes`): where, how high, the
gradient norm of the spike's windows and of the windows just before and after it as
multiples of the run's median after convergence; then the summary over runs, and
how many runs end inside a spike (their report.json's final evaluation).
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_float(
    'bit_errors',
    0.2,
    'A training window above this many bit errors per '
    'sequence, after convergence, is part of a spike.',
)


def _runs(workdir):
  """(label, member index or None, report of that run or member) per run in a workdir."""
  from ntm_jax.training import metrics

  records = metrics.read_log(workdir)
  report = {}
  if os.path.exists(os.path.join(workdir, 'report.json')):
    with open(os.path.join(workdir, 'report.json')) as f:
      report = json.load(f)
  if 'members' not in report and not any('member' in r for r in records):
    return records, [(os.path.basename(os.path.normpath(workdir)), None, report)]
  members = report.get('members') or []
  indices = sorted({r['member'] for r in records if 'member' in r})
  return records, [
      (
          f'{os.path.basename(os.path.normpath(workdir))}/seed'
          f'{members[i]["seed"] if i < len(members) else i}',
          i,
          members[i] if i < len(members) else {},
      )
      for i in indices
  ]


def main(argv):
  from ntm_jax import analysis

  workdirs = argv[1:]
  if not workdirs:
    sys.exit('error: name one or more run workdirs, e.g. runs/copy_ntm_seed0.')
  rows, ratios, before, after, converged_runs, ended_worse = [], [], [], [], 0, []
  fmt = lambda x: '-' if x is None else f'{x:.0f}x'  # noqa: E731
  for workdir in workdirs:
    try:
      records, runs = _runs(workdir)
    except FileNotFoundError:
      sys.exit(f'error: {workdir} has no metrics.jsonl; name a run workdir.')
    for label, member, report in runs:
      baseline, spikes = analysis.cost_spikes(records, member, FLAGS.bit_errors)
      if baseline is None:
        rows.append(f'{label}: never converged')
        continue
      converged_runs += 1
      final = report.get('results', {}).get('train', {}).get('bit_errors')
      ended_worse.append(final is not None and final >= 0.1)
      rows.append(
          f'{label}: {len(spikes)} spike(s); median grad norm after converging '
          f'{baseline:.3f}; final bit errors on the training mix: '
          f'{"-" if final is None else f"{final:.3f}"}'
      )
      for spike in spikes:
        rows.append(
            f'  step {spike["step"]:>6}: peak {spike["bit_errors"]:6.2f} bit '
            f'errors at {spike["peak_step"]}; grad norm {fmt(spike["grad_norm_ratio"])}'
            f' the median (window before {fmt(spike["before_ratio"])}, after '
            f'{fmt(spike["after_ratio"])}; largest step {fmt(spike["largest_step_ratio"])})'
        )
        ratios.append(spike['grad_norm_ratio'])
        if spike['before_ratio'] is not None:
          before.append(spike['before_ratio'])
        if spike['after_ratio'] is not None:
          after.append(spike['after_ratio'])
  print('\n'.join(rows))
  print(
      f'\n{converged_runs} converged run(s), {len(ratios)} spike(s) above '
      f'{FLAGS.bit_errors} bit errors per sequence after converging.'
  )
  if ratios:
    print(
        f"Gradient norm in a spike's windows: median {np.median(ratios):.0f}x the run's "
        f'median, smallest {min(ratios):.0f}x; the window before: median '
        f'{np.median(before):.1f}x ({sum(b >= 10 for b in before)} of {len(before)} at '
        f'10x or more); the window after: median {np.median(after):.1f}x.'
    )
  print(
      f'Converged runs that end at 0.1 bit errors per sequence or more on the training '
      f'mix (inside a spike): {sum(ended_worse)} of {len(ended_worse)}.'
  )


if __name__ == '__main__':
  flags.FLAGS(sys.argv, known_only=True)
  app.run(main)
