"""Peak memory of a long training step with and without chunked rematerialisation.

`python -m benchmarks.remat` compiles the copy training step for `--length` (T = 2L + 1
steps), `--memory_size` slots and `--batch_size` three ways: keeping every intermediate
(`remat_chunk=0`), keeping each step's carry (1, the default) and keeping the carry every
`--remat_chunk` steps. It prints XLA's memory analysis of each (arguments + outputs +
temporaries, less donated buffers), then runs the chunked step once to show it trains.
Last, it times the copy configuration's step keeping every intermediate (0) against
recomputing each step (1) at `--speed_batch_sizes`.
"""

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import backend
from ntm_jax.training import factory
from ntm_jax.training import optim
from ntm_jax.training import train_state

flags.DEFINE_integer('length', 500, 'Copy length L; T = 2L + 1 steps.')
flags.DEFINE_integer('memory_size', 8192, 'Memory slots N.')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('remat_chunk', 16, 'Chunk length of the rematerialised scan.')
flags.DEFINE_bool('run', True, 'Also run one rematerialised step and time it.')
flags.DEFINE_list(
    'speed_batch_sizes',
    ['1', '8', '32'],
    'Batch sizes of the speed comparison (copy configuration, N=128, T=41).',
)
flags.DEFINE_string('output', 'benchmarks/remat.json', 'Where to write the JSON.')
FLAGS = flags.FLAGS


def compiled_step(config, task):
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  keys = train_state.Keys(0)
  state = jax.eval_shape(
      lambda: train_state.create_train_state(model, optimizer, task, keys)
  )
  step = train_state.make_train_step(model, optimizer, task, config.batch_size, keys.data)
  start = time.perf_counter()
  compiled = step.lower(state).compile()
  memory = compiled.memory_analysis()
  peak = (
      memory.temp_size_in_bytes
      + memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
  )
  return compiled, peak, time.perf_counter() - start, (model, optimizer, keys)


def speed_comparison(batch_size: int, blocks: int = 15, block_steps: int = 10) -> dict:
  """Median step time of the copy configuration with remat_chunk 0 and 1, in seconds.

  The two compiled steps run in alternating blocks in one process, so that this
  machine's drift (up to 2x over minutes, BUILD_NOTES.md) falls on both alike.
  """
  task = CopyTask()
  runs = {}
  for chunk in (0, 1):
    config = ExperimentConfig(workdir='/unused', batch_size=batch_size, remat_chunk=chunk)
    compiled, _, _, (model, optimizer, keys) = compiled_step(config, task)
    state = train_state.create_train_state(model, optimizer, task, keys)
    for _ in range(5):  # warm-up
      state, _ = compiled(state)
    runs[chunk] = dict(step=compiled, state=jax.block_until_ready(state), seconds=[])
  for _ in range(blocks):
    for run in runs.values():
      for _ in range(block_steps):
        start = time.perf_counter()
        run['state'], metrics = run['step'](run['state'])
        jax.block_until_ready(metrics)
        run['seconds'].append(time.perf_counter() - start)
  return {chunk: float(np.median(run['seconds'])) for chunk, run in runs.items()}


def main(argv):
  del argv
  backend.tune_cpu_compiler()  # as the experiment runners do on the CPU
  task = CopyTask(max_length=FLAGS.length, eval_lengths=(FLAGS.length,))
  results = dict(
      length=FLAGS.length,
      time_steps=2 * FLAGS.length + 1,
      memory_size=FLAGS.memory_size,
      batch_size=FLAGS.batch_size,
      remat_chunk=FLAGS.remat_chunk,
  )
  print(
      f'copy step, T={2 * FLAGS.length + 1}, N={FLAGS.memory_size}, '
      f'batch {FLAGS.batch_size}:'
  )
  for name, chunk in (('plain', 0), ('step', 1), ('remat', FLAGS.remat_chunk)):
    config = ExperimentConfig(
        workdir='/unused',
        batch_size=FLAGS.batch_size,
        memory_size=FLAGS.memory_size,
        remat_chunk=chunk,
    )
    compiled, peak, seconds, (model, optimizer, keys) = compiled_step(config, task)
    results[f'{name}_peak_bytes'] = peak
    results[f'{name}_compile_seconds'] = seconds
    print(
        f'  {name:>5} (remat_chunk {chunk:>3}): peak {peak / 2**30:7.2f} GiB, '
        f'compile {seconds:5.1f} s'
    )
  if FLAGS.run:
    state = train_state.create_train_state(model, optimizer, task, keys)
    start = time.perf_counter()
    state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    results['remat_step_seconds'] = time.perf_counter() - start
    results['remat_cost'] = float(metrics['cost'])
    print(
        f'  one remat step ran in {results["remat_step_seconds"]:.1f} s, cost '
        f'{results["remat_cost"]:.1f} bits per sequence'
    )
  print('\ncopy configuration (N=128, M=20, T=41, LSTM controller), median step time:')
  results['speed'] = []
  for batch_size in map(int, FLAGS.speed_batch_sizes):
    seconds = speed_comparison(batch_size)
    results['speed'].append(
        dict(
            batch_size=batch_size,
            remat_chunk_0_seconds=seconds[0],
            remat_chunk_1_seconds=seconds[1],
        )
    )
    print(
        f'  batch {batch_size:>4}: remat_chunk 0 {1e3 * seconds[0]:7.2f} ms, 1 '
        f'{1e3 * seconds[1]:7.2f} ms ({seconds[0] / seconds[1]:.2f}x)',
        flush=True,
    )
  with open(FLAGS.output, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'Wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
