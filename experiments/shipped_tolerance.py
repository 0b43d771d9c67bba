"""How the check of the shipped runs treats float noise and broken equations.

`python -m experiments.shipped_tolerance [--noise=1e-6] [--draws=8] [--runs=copy_ntm]`
re-evaluates each shipped run (`trained/<name>/`) per sequence with every parameter
multiplied by 1 + noise * N(0, 1), once per draw, and with one equation of the cell broken
at a time, and compares each with the run's `expected.json` as `tests/test_trained.py`
does (`experiments.ship.differences`). A good tolerance passes the noisy draws (another
machine's rounding moves less than 1e-6 noise does) and fails the broken equations.
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_float('noise', 1e-6, 'Relative standard deviation of the parameter noise.',
                   lower_bound=0.0)
flags.DEFINE_integer('draws', 8, 'Noisy draws per run.', lower_bound=0)
flags.DEFINE_list('runs', None, 'Shipped runs to check (names under --trained); all of '
                  'them by default.')
flags.DEFINE_string('trained', 'trained', 'Where shipped runs live.')


def broken_equations() -> dict:
  """{label: NTMCell fields}: one wrong equation each, injected into the cell.

  Each is the library's function with one input changed, so the rest of the equation is
  what the shipped run computes.
  """
  from ntm_jax import addressing
  from ntm_jax import memory

  def address_with(change):
    def address(memory_, w_prev, key, beta, gate, shift_weights, gamma):
      return addressing.address(memory_, w_prev, key,
                                **change(beta=beta, gate=gate, shift_weights=shift_weights,
                                         gamma=gamma))
    return dict(address_fn=address)

  return {
      'Eq. 9 left out (gamma = 1)': address_with(lambda **p: dict(p, gamma=1.0)),
      'Eq. 5 with half the key strength': address_with(
          lambda **p: dict(p, beta=p['beta'] / 2)),
      'Eq. 7 with the gate swapped (1 - g)': address_with(
          lambda **p: dict(p, gate=1 - p['gate'])),
      'Eq. 8 shifting the other way': address_with(
          lambda **p: dict(p, shift_weights=p['shift_weights'][::-1])),
      'Eq. 3 without the erase': dict(
          write_fn=lambda memory_, w, erase, add: memory.write_heads(memory_, w,
                                                                     0 * erase, add)),
  }


def check_run(directory: str, noise: float, draws: int,
              broken: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
  """(case, verdict) rows for one shipped run; `broken` picks equations by label (all)."""
  import jax

  from experiments import ship
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import loop

  with open(os.path.join(directory, 'expected.json')) as f:
    recorded = json.load(f)
  expected, batch_size = recorded['per_sequence'], recorded['eval_batch_size']
  config, task = ExperimentConfig.load(directory)
  model, params, _ = loop.restore_evaluated_params(config, task)
  keys = loop.Keys(config.seed)

  def verdict(params, model=model) -> str:
    found = ship.differences(expected,
                             ship.metrics_per_sequence(model, params, task, keys,
                                                       batch_size))
    return 'fails: ' + found[0][:80] if found else 'passes'

  rows = [('as shipped', verdict(params))]
  leaves, tree = jax.tree.flatten(params)
  passed = 0
  for draw in range(draws):
    draw_keys = jax.random.split(jax.random.key(100 + draw), len(leaves))
    noisy = jax.tree.unflatten(tree, [
        leaf * (1 + noise * jax.random.normal(key, leaf.shape, leaf.dtype))
        for leaf, key in zip(leaves, draw_keys)])
    passed += verdict(noisy) == 'passes'
  if draws:
    rows.append((f'noise {noise:g}', f'{passed} of {draws} draws pass'))
  for label, fields in broken_equations().items():
    if broken is not None and label not in broken:
      continue
    rows.append((label, verdict(params, model.clone(cell=model.cell.clone(**fields)))))
  return rows


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}.')
  logging.set_verbosity(logging.WARNING)
  from ntm_jax.training import backend
  backend.tune_cpu_compiler()  # the compiler flags the tests use
  shipped = sorted(name for name in os.listdir(FLAGS.trained)
                   if os.path.exists(os.path.join(FLAGS.trained, name, 'expected.json')))
  unknown = sorted(set(FLAGS.runs or ()) - set(shipped))
  if unknown:
    sys.exit(f'error: --runs={",".join(unknown)} not shipped in --trained={FLAGS.trained}; '
             f'shipped: {", ".join(shipped)}.')
  print(f'{"run":>24} | {"case":<36} | verdict')
  print('-' * 90)
  for name in FLAGS.runs or shipped:
    for case, verdict in check_run(os.path.join(FLAGS.trained, name), FLAGS.noise,
                                   FLAGS.draws):
      print(f'{name:>24} | {case:<36} | {verdict}', flush=True)


if __name__ == '__main__':
  app.run(main)
