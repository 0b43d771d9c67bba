"""How a trained priority-sort NTM sorts: `python -m experiments.tools.priority_sort_heads
--workdir=<run> [--checkpoint=best]`.

Traces the run's evaluated parameters on fresh sequences of the task it trained on (its
config.json; the paper's priorities in [-1, 1], as evaluation draws them) and prints, per
write head, how it places the inputs (`ntm_jax.analysis.write_placement`), then
the bit errors per output vector by the gap to the nearest other priority. A head that
puts inputs on one slot each in the order of their priorities is the paper's layout
(Fig. 17); one that puts them on slots of their own in no order is search, where the read
keys find the highest priority not yet output (docs/RESULTS.md, "Priority sort").
The runs measured with it: docs/history, "Priority sort: layout or search".
"""

import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string(
    'workdir',
    None,
    'A priority-sort run (its config.json and ' 'checkpoints).',
    required=True,
)
flags.DEFINE_enum(
    'checkpoint',
    'latest',
    ('latest', 'best'),
    "Analyse the latest checkpoint, or the best evaluation's (best/).",
)
flags.DEFINE_integer('sequences', 256, 'Sequences to trace.', lower_bound=1)
flags.DEFINE_integer('data_seed', 11, 'PRNG seed of those sequences.')


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; flags look like --name=value.')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  import jax

  from ntm_jax import analysis
  from ntm_jax import models
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import backend
  from ntm_jax.training import loop

  backend.tune_cpu_compiler()

  try:
    config, task = ExperimentConfig.load(FLAGS.workdir)
    if task.name != 'priority_sort' or config.model != 'ntm':
      raise ValueError(
          f'this is a {task.name} {config.model} run; the analysis needs a '
          'priority_sort ntm run.'
      )
    model, params, step = loop.restore_evaluated_params(config, task, FLAGS.checkpoint)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f'error: --workdir={FLAGS.workdir}: {error}')
  batch = task.sample_eval(
      jax.random.key(FLAGS.data_seed), FLAGS.sequences, task.num_inputs
  )
  logits, states = jax.jit(lambda p, x: models.trace_ntm(model, p, x))(
      params, batch.inputs
  )
  n = task.num_inputs
  priorities = batch.inputs[:, :n, -2]  # the channel before the delimiter
  placement = analysis.write_placement(states.write_weights[:, :n], priorities)
  print(f'{FLAGS.workdir}, step {step}, {FLAGS.sequences} sequences:')
  print('write head | peak weight | slots for the inputs | order by priority')
  for head in range(len(placement['peak'])):
    print(
        f'{head:10d} | {placement["peak"][head]:11.2f} | {placement["slots"][head]:6.1f} '
        f'of {n:<10d} | {placement["order"][head]:.2f}'
    )
  algorithm, head = analysis.sorting_algorithm(placement, n)
  print(
      'Reading: '
      + {
          'layout': (
              f'layout: write head {head} places the inputs in the order of their '
              'priorities'
          ),
          'search': (
              f'search: write head {head} gives each input a slot of its own, in no '
              'order'
          ),
          None: (
              'neither: no write head places the inputs sharply by priority or one per '
              'slot'
          ),
      }[algorithm]
  )
  gaps = analysis.bit_errors_by_priority_gap(logits, batch, n)
  print(
      'Bit errors per output vector by the gap to the nearest other priority: '
      + ', '.join(f'{gap}: {errors:.2f}' for gap, errors in gaps.items())
  )


if __name__ == '__main__':
  app.run(main)
