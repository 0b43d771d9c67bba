"""The table over seeds of separately trained runs, as a population (`--seeds`) prints it:
`python -m experiments.tools.seeds runs/copy_ntm_seed40 runs/copy_ntm_seed41 ...`.

Each workdir's report.json is a row (every member, for a population's workdir):
sequences to converge (`r` per restart) and, per evaluated difficulty, what the task is
judged by (bit errors; N-grams: the cost above the optimal estimator's); then how many
converged, their median, and the median, mean and worst per difficulty.
The runs must be of one task with the same evaluated difficulties.
"""

import json
import os
import sys

from absl import app


def _rows(workdir: str) -> list[dict]:
  """The member reports of a workdir: its single run's report, or its members'."""
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  members = report.get('members') or [dict(report, failed=False)]
  return [dict(m, task=report['task']) for m in members]


def main(argv):
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import population

  workdirs = argv[1:]
  if not workdirs:
    sys.exit('error: name one or more run workdirs, e.g. runs/copy_ntm_seed0.')
  rows = []
  for workdir in workdirs:
    try:
      rows += _rows(workdir)
    except (OSError, ValueError, KeyError):
      sys.exit(f'error: {workdir} has no readable report.json; name a finished run.')
  tasks = {row['task'] for row in rows}
  labels = {tuple(row['results']) for row in rows}
  if len(tasks) > 1 or len(labels) > 1:
    sys.exit(
        f'error: the runs are of different tasks or evaluated difficulties '
        f'({", ".join(sorted(tasks))}); name runs of one experiment.'
    )
  _, task = ExperimentConfig.load(workdirs[0])
  summary = population.summary(rows, list(rows[0]['results']))
  print(population.format_table(task, rows, summary))


if __name__ == '__main__':
  app.run(main)
