"""Learning curves of several runs on one figure (e.g. NTM against the LSTM baseline).

`python -m experiments.tools.compare --runs=NTM=runs/copy_ntm_seed0,LSTM=runs/copy_lstm_seed0
--output=docs/figures/copy_curves.png --title="Copy"`
"""

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list('runs', None, 'LABEL=WORKDIR pairs.', required=True)
flags.DEFINE_string('output', None, 'The PNG to write.', required=True)
flags.DEFINE_string('title', None, 'Figure title.')
flags.DEFINE_float('reference_cost', None, 'A cost per sequence to draw as a line.')


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}.')
  from ntm_jax.training import plots

  runs = {}
  for pair in FLAGS.runs:
    label, sep, workdir = pair.partition('=')
    if not sep or not label or not workdir:
      sys.exit(f'error: --runs takes LABEL=WORKDIR pairs, got {pair!r}.')
    runs[label] = workdir
  try:
    plots.learning_curves(runs, FLAGS.output, FLAGS.title, FLAGS.reference_cost)
  except FileNotFoundError as error:
    sys.exit(f'error: {error}')
  print(f'Wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
