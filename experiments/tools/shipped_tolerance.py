"""How the check of the shipped runs treats float noise and broken equations.

`python -m experiments.tools.shipped_tolerance [--noise=1e-6] [--draws=8] [--runs=copy_ntm]`
re-evaluates each shipped run (`trained/<name>/`) per sequence with every parameter
multiplied by 1 + noise * N(0, 1), once per draw, and with one equation of the cell broken
at a time, and compares each with the run's `expected.json` as `tests/test_trained.py`
does (`ntm_jax.training.regression.differences`). A good tolerance passes the noisy draws (another
machine's rounding moves less than 1e-6 noise does) and fails the broken equations.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_float(
    'noise', 1e-6, 'Relative standard deviation of the parameter noise.', lower_bound=0.0
)
flags.DEFINE_integer('draws', 8, 'Noisy draws per run.', lower_bound=0)
flags.DEFINE_list(
    'runs',
    None,
    'Shipped runs to check (names under --trained); all of ' 'them by default.',
)
flags.DEFINE_string('trained', 'trained', 'Where shipped runs live.')


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}.')
  logging.set_verbosity(logging.WARNING)
  from ntm_jax.training import backend

  backend.tune_cpu_compiler()  # the compiler flags the tests use
  from ntm_jax.training import regression

  shipped = sorted(
      name
      for name in os.listdir(FLAGS.trained)
      if os.path.exists(os.path.join(FLAGS.trained, name, 'expected.json'))
  )
  unknown = sorted(set(FLAGS.runs or ()) - set(shipped))
  if unknown:
    sys.exit(
        f'error: --runs={",".join(unknown)} not shipped in --trained={FLAGS.trained}; '
        f'shipped: {", ".join(shipped)}.'
    )
  print(f'{"run":>24} | {"case":<36} | verdict')
  print('-' * 90)
  for name in FLAGS.runs or shipped:
    for case, verdict in regression.check_run(
        os.path.join(FLAGS.trained, name), FLAGS.noise, FLAGS.draws
    ):
      print(f'{name:>24} | {case:<36} | {verdict}', flush=True)


if __name__ == '__main__':
  app.run(main)
