"""Peak memory of a long training step with and without chunked rematerialisation.

`python -m benchmarks.remat` compiles the copy training step for `--length` (T = 2L + 1
steps), `--memory_size` slots and `--batch_size`, once plainly and once with
`--remat_chunk`, and prints XLA's memory analysis of each (arguments + outputs +
temporaries, less donated buffers). The remat step is then run once to show it trains.
"""

import json
import time

from absl import app
from absl import flags
import jax

from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import backend
from ntm_jax.training import loop

flags.DEFINE_integer('length', 500, 'Copy length L; T = 2L + 1 steps.')
flags.DEFINE_integer('memory_size', 8192, 'Memory slots N.')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('remat_chunk', 16, 'Chunk length of the rematerialised scan.')
flags.DEFINE_bool('run', True, 'Also run one rematerialised step and time it.')
flags.DEFINE_string('output', 'benchmarks/remat.json', 'Where to write the JSON.')
FLAGS = flags.FLAGS


def compiled_step(config, task):
  model = loop.build_model(config, task)
  optimizer = loop.make_optimizer(config)
  keys = loop.Keys(0)
  state = jax.eval_shape(lambda: loop.create_train_state(model, optimizer, task, keys))
  step = loop.make_train_step(model, optimizer, task, config.batch_size, keys.data)
  start = time.perf_counter()
  compiled = step.lower(state).compile()
  memory = compiled.memory_analysis()
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes +
          memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return compiled, peak, time.perf_counter() - start, (model, optimizer, keys)


def main(argv):
  del argv
  backend.tune_cpu_compiler()  # as the experiment runners do on the CPU
  task = CopyTask(max_length=FLAGS.length, eval_lengths=(FLAGS.length,))
  results = dict(length=FLAGS.length, time_steps=2 * FLAGS.length + 1,
                 memory_size=FLAGS.memory_size, batch_size=FLAGS.batch_size,
                 remat_chunk=FLAGS.remat_chunk)
  print(f'copy step, T={2 * FLAGS.length + 1}, N={FLAGS.memory_size}, '
        f'batch {FLAGS.batch_size}:')
  for chunk in (0, FLAGS.remat_chunk):
    config = ExperimentConfig(workdir='/unused', batch_size=FLAGS.batch_size,
                              memory_size=FLAGS.memory_size, remat_chunk=chunk)
    compiled, peak, seconds, (model, optimizer, keys) = compiled_step(config, task)
    name = 'remat' if chunk else 'plain'
    results[f'{name}_peak_bytes'] = peak
    results[f'{name}_compile_seconds'] = seconds
    print(f'  {name:>5} (chunk {chunk:>3}): peak {peak / 2**30:7.2f} GiB, '
          f'compile {seconds:5.1f} s')
  if FLAGS.run:
    state = loop.create_train_state(model, optimizer, task, keys)
    start = time.perf_counter()
    state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    results['remat_step_seconds'] = time.perf_counter() - start
    results['remat_cost'] = float(metrics['cost'])
    print(f'  one remat step ran in {results["remat_step_seconds"]:.1f} s, cost '
          f'{results["remat_cost"]:.1f} bits per sequence')
  with open(FLAGS.output, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'Wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
