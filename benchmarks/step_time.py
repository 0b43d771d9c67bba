"""Training-step speed, scaling, compile time, peak memory and arithmetic efficiency.

`python -m benchmarks.step_time` prints tables and writes `--output` (JSON). It times the
real jitted training step of the runner (`ntm_jax.training.train_state.make_train_step`) on the
copy task, after a warm-up, as the median of `--repeats` steps: on one device with the
whole batch at once, and as the runners' `--data_parallel` runs it on a CPU (one JAX device
per core, each taking its share of the batch).

Model FLOPs are counted from the shapes (dense layers: 2 FLOPs per multiply-accumulate;
per head: content addressing 4NM + (10 + 2S)N, a write 4NM, a read 2NM; backward = 2 x
forward) and divided by the step time, as a fraction of this machine's dense float32
matmul throughput measured in the same run. Each row also times the same step's dense
layers alone (the controller, the heads' projection and the output layer at the model's
shapes, in the same scan, forward and backward, with the memory and addressing left out):
the efficiency a step would reach if everything but its matmuls were free.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from benchmarks.measure import measure
from benchmarks.measure import median_seconds
from ntm_jax import HeadLayout
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import backend
from ntm_jax.training import factory
from ntm_jax.training import train_state

flags.DEFINE_list(
    'batch_sizes', ['1', '8', '32', '128'], 'Batch sizes of the speed table.'
)
flags.DEFINE_list(
    'dtypes',
    ['float32'],
    'Dense-layer dtypes of the speed table: float32, '
    'bfloat16 (the memory and addressing stay float32).',
)
flags.DEFINE_list(
    'parallel_batch_sizes',
    ['32', '128'],
    'Batch sizes timed data-parallel over one CPU device per core.',
)
flags.DEFINE_integer(
    'parallel_micro_batch_size',
    0,
    'Micro-batch of the data-parallel '
    'rows (0: each device takes its whole share at once).',
)
flags.DEFINE_integer(
    'cpu_devices',
    1,
    'JAX CPU devices of this process. With more than '
    'one it times only the data-parallel rows: the main run starts such '
    'a process itself, one device per core, because splitting the CPU '
    'into devices slows the single-device rows.',
)
flags.DEFINE_float(
    'matmul_flops_per_second',
    0.0,
    'Set by the main run for the process of '
    'the data-parallel rows: its own measured matmul throughput, so that '
    'every row is divided by the larger of the two.',
)
flags.DEFINE_list(
    'memory_sizes',
    ['32', '128', '512', '2048', '8192'],
    'Memory slots N of the scaling table (batch 32, length 20).',
)
flags.DEFINE_list(
    'lengths',
    ['20', '100', '500'],
    'Copy lengths of the scaling table (batch 32, N = 128); T = 2L + 1.',
)
flags.DEFINE_list(
    'packing_members',
    ['1', '4'],
    'Members (batch 1 each) of the residual-packing table: the copy '
    "experiment's step with NTMCell.residual_packing never (what 'auto' takes on "
    'a CPU) and always, timed in turns in this process (empty: no table).',
)
flags.DEFINE_integer('packing_rounds', 10, 'Turns of the residual-packing table.')
flags.DEFINE_bool(
    'tune_cpu',
    True,
    'Apply ntm_jax.training.backend.tune_cpu_compiler() as the '
    "runners do (--notune_cpu measures XLA's defaults).",
)
flags.DEFINE_integer('repeats', 20, 'Timed steps per measurement.')
flags.DEFINE_bool(
    'dense_only',
    True,
    "Also time each speed row's step with only its dense "
    "layers (--nodense_only halves the table's time).",
)
flags.DEFINE_string('output', 'benchmarks/step_time.json', 'Where to write the JSON.')
FLAGS = flags.FLAGS


def matmul_flops_per_second(size: int = 1024, repeats: int = 20) -> float:
  """This machine's dense float32 matmul throughput, measured with JAX.

  The better of one device and of all devices at once (each multiplying its own rows), so
  that the peak counts every core whether XLA's threads or the devices use them.
  """
  a = jax.random.normal(jax.random.key(0), (size, size)) / size**0.5  # keeps x's scale
  best = 0.0
  for num_devices in sorted({1, jax.device_count()}):
    mesh = jax.make_mesh((num_devices,), ('rows',), devices=jax.devices()[:num_devices])
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('rows'))
    x = jax.device_put(
        jax.random.normal(jax.random.key(1), (num_devices * size, size)), rows
    )
    matmul = jax.jit(lambda x: x @ a, out_shardings=rows)
    x = matmul(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
      x = matmul(x)
    x.block_until_ready()
    best = max(best, 2 * num_devices * size**3 * repeats / (time.perf_counter() - start))
  return best


def model_flops(
    config: ExperimentConfig, task: CopyTask, batch_size: int, num_steps: int
) -> float:
  """Training FLOPs of one step (forward x 3) counted from the shapes."""
  n, m, h = config.memory_size, config.word_size, config.controller_features
  heads, shifts = config.num_heads, 2 * config.shift_range + 1
  inputs, outputs = task.input_size, task.output_size
  if config.controller == 'lstm':
    controller = 2 * (inputs + heads * m + h) * 4 * h
    controller += (config.controller_layers - 1) * 2 * (2 * h) * 4 * h
  else:
    controller = 2 * (inputs + heads * m) * h + (config.controller_layers - 1) * 2 * h * h
  head_parameters = HeadLayout(heads, heads, m, shifts).size
  projection = 2 * h * head_parameters
  addressing = 2 * heads * (4 * n * m + (10 + 2 * shifts) * n)
  memory = heads * (4 * n * m + 2 * n * m)
  output = 2 * (h + heads * m) * outputs
  per_step = controller + projection + addressing + memory + output
  return 3.0 * per_step * num_steps * batch_size


def dense_layer_shapes(config: ExperimentConfig, task: CopyTask) -> list[tuple[int, int]]:
  """(inputs, outputs) of the NTM's dense layers: controller layers, heads, output.

  An LSTM layer's input and hidden kernels count as one (in + h, 4h) matmul.
  """
  h, m = config.controller_features, config.word_size
  heads, shifts = config.num_heads, 2 * config.shift_range + 1
  head_parameters = HeadLayout(heads, heads, m, shifts).size
  lstm = config.controller == 'lstm'
  gates = 4 * h if lstm else h
  first_in = task.input_size + heads * m + (h if lstm else 0)
  later_in = 2 * h if lstm else h
  return (
      [(first_in, gates)]
      + [(later_in, gates)] * (config.controller_layers - 1)
      + [(h, head_parameters), (h + heads * m, task.output_size)]
  )


def dense_layers_only_seconds(
    config: ExperimentConfig, task: CopyTask, repeats: int
) -> float:
  """Median time of a training step that keeps only the model's dense layers.

  The same shapes and the same recurrence as the NTM step (a time scan, the gradient
  through it), without the memory and the addressing: the read vectors are stood in for
  by a tanh of the heads' projection, so that the backward pass keeps the model's chain
  of dependences from step to step. With `config.data_parallel`, the batch is split over
  all devices (each takes its share at once, whatever `config.micro_batch_size`).
  """
  h, m, heads = config.controller_features, config.word_size, config.num_heads
  batch, num_steps = config.batch_size, 2 * task.max_length + 1
  shapes = dense_layer_shapes(config, task)
  keys = jax.random.split(jax.random.key(0), len(shapes) + 1)
  weights = [0.05 * jax.random.normal(k, s) for k, s in zip(keys, shapes)]
  inputs = jax.random.normal(keys[-1], (num_steps, batch, task.input_size))

  def loss(weights, inputs):
    *controller, projection, output = weights

    def step(carry, x):
      states, reads = carry
      layer_in, new_states = jnp.concatenate([x, reads], -1), []
      for w, (c, hidden) in zip(controller, states):
        if config.controller == 'lstm':
          i, f, g, o = jnp.split(jnp.concatenate([layer_in, hidden], -1) @ w, 4, -1)
          c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
          hidden = jax.nn.sigmoid(o) * jnp.tanh(c)
        else:
          hidden = jnp.tanh(layer_in @ w)
        new_states.append((c, hidden))
        layer_in = hidden
      reads = jnp.tanh((layer_in @ projection)[:, : heads * m])
      return (new_states, reads), jnp.concatenate([layer_in, reads], -1) @ output

    examples = inputs.shape[1]  # this device's share of the batch
    zeros = jnp.zeros((examples, h))
    carry = (
        [(zeros, zeros)] * config.controller_layers,
        jnp.zeros((examples, heads * m)),
    )
    _, ys = jax.lax.scan(step, carry, inputs)
    return jnp.mean(ys**2)

  gradient = jax.grad(loss)
  if (
      config.data_parallel
  ):  # as the runner's step: each device its share, one sum at the end
    P = jax.sharding.PartitionSpec  # noqa: N806 - the usual short name
    device_gradient = gradient
    gradient = jax.shard_map(
        lambda *args: jax.lax.psum(device_gradient(*args), 'batch'),
        mesh=train_state.make_mesh(batch),
        in_specs=(P(), P(None, 'batch')),
        out_specs=P(),
        check_vma=False,
    )
  gradient = jax.jit(gradient)
  return median_seconds(lambda: gradient(weights, inputs), repeats)


def _copy_config(**changes) -> ExperimentConfig:
  return ExperimentConfig(workdir='/unused', **changes)


def fitted_exponent(sizes, seconds) -> float:
  """Slope of log(time) against log(size) over the two largest sizes."""
  return math.log(seconds[-1] / seconds[-2]) / math.log(sizes[-1] / sizes[-2])


def speed_rows(splits, peak: float) -> list[dict]:
  """Times the copy configuration per (controller, batch, data-parallel, micro-batch)."""
  task = CopyTask()
  num_steps = 2 * task.max_length + 1
  rows = []
  for controller, dtype in [
      (c, d) for c in ('lstm', 'feedforward') for d in FLAGS.dtypes
  ]:
    for batch_size, data_parallel, micro_batch_size in splits:
      config = _copy_config(
          batch_size=batch_size,
          controller=controller,
          dtype=dtype,
          data_parallel=data_parallel,
          micro_batch_size=micro_batch_size,
      )
      row = measure(config, task, FLAGS.repeats, forward=True)
      step_flops = model_flops(config, task, batch_size, num_steps)
      flops = step_flops / row['step_seconds']
      devices = jax.device_count() if data_parallel else 1
      row.update(
          controller=controller,
          dtype=dtype,
          batch_size=batch_size,
          devices=devices,
          micro_batch_size=micro_batch_size,
          sequences_per_second=batch_size / row['step_seconds'],
          model_flops_per_second=flops,
          fraction_of_matmul=flops / peak,
          dense_only_seconds=None,
          dense_only_fraction_of_matmul=None,
      )
      if FLAGS.dense_only:
        row['dense_only_seconds'] = dense_layers_only_seconds(config, task, FLAGS.repeats)
        row['dense_only_fraction_of_matmul'] = (
            step_flops / row['dense_only_seconds'] / peak
        )
      rows.append(row)
      peak_mib = (row['device_peak_bytes'] or row['peak_bytes'] or 0) / 2**20
      print(
          f'{controller:>11} {dtype:>8} {batch_size:>6} {devices:>8} '
          f'{micro_batch_size or "-":>6} '
          f'{1e3 * row["step_seconds"]:9.1f} {1e3 * row["forward_seconds"]:8.1f} '
          f'{row["sequences_per_second"]:9.1f} '
          f'{row["compile_seconds"]:10.2f} {peak_mib:9.1f} {flops / 1e9:8.2f} '
          f'{100 * flops / peak:8.1f}% {_dense_columns(row)}',
          flush=True,
      )
  return rows


def _dense_columns(row: dict) -> str:
  if row['dense_only_seconds'] is None:
    return f'{"-":>9} {"-":>9}'
  return (
      f'{1e3 * row["dense_only_seconds"]:9.2f} '
      f'{100 * row["dense_only_fraction_of_matmul"]:8.1f}%'
  )


def data_parallel_rows(peak: float) -> dict:
  """The data-parallel rows, timed in a child process with one CPU device per core."""
  with tempfile.TemporaryDirectory() as directory:
    output = os.path.join(directory, 'rows.json')
    command = [
        sys.executable,
        '-m',
        'benchmarks.step_time',
        f'--cpu_devices={backend.usable_cores()}',
        f'--output={output}',
        f'--parallel_batch_sizes={",".join(FLAGS.parallel_batch_sizes)}',
        f'--parallel_micro_batch_size={FLAGS.parallel_micro_batch_size}',
        f'--dtypes={",".join(FLAGS.dtypes)}',
        f'--repeats={FLAGS.repeats}',
        f'--tune_cpu={FLAGS.tune_cpu}',
        f'--dense_only={FLAGS.dense_only}',
        f'--matmul_flops_per_second={peak}',
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(command, check=True, cwd=root, env=dict(os.environ, PYTHONPATH=root))
    with open(output) as f:
      return json.load(f)


def residual_packing_rows() -> list[dict]:
  """The copy experiment's step (batch 1, every intermediate stored) per cell residual
  packing, compiled once each and timed in turns, so that the machine's drift is shared.
  """
  task = CopyTask()
  config = _copy_config(
      batch_size=1,
      remat_chunk=0,
      learning_rate=1e-4,
      optimizer='rmsprop',
      clip=10.0,
      clip_mode='elementwise',
      memory_init='random',
      memory_stddev=0.3,
      entropy_penalty=0.005,
  )
  rows = []
  for members in map(int, FLAGS.packing_members):
    variant_config = (
        config.replace(seeds=tuple(range(members))) if members > 1 else config
    )
    variants = {}
    for packing in ('never', 'always'):  # on a CPU 'auto' traces the 'never' step
      model = factory.build_model(variant_config, task)
      model = model.clone(cell=model.cell.clone(residual_packing=packing))
      variants[packing] = dict(measure(variant_config, task, 0, model=model), times=[])
    steps = max(FLAGS.repeats // FLAGS.packing_rounds, 1)
    for _ in range(FLAGS.packing_rounds):
      for variant in variants.values():
        state, _ = variant['compiled'](variant['state'])  # the turn's warm-up step
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
          state, _ = variant['compiled'](state)
        jax.block_until_ready(state)
        variant['times'].append((time.perf_counter() - start) / steps)
        variant['state'] = state
    never = float(np.median(variants['never']['times']))
    for packing, variant in variants.items():
      seconds = float(np.median(variant['times']))
      rows.append(
          dict(
              members=members,
              residual_packing=packing,
              step_seconds=seconds,
              compile_seconds=variant['compile_seconds'],
              ratio_to_never=seconds / never,
          )
      )
      print(
          f'{members:>8} {packing:>8} {1e3 * seconds:9.2f} {seconds / never:9.2f} '
          f'{variant["compile_seconds"]:10.1f}',
          flush=True,
      )
  return rows


def main(argv):
  del argv
  if FLAGS.tune_cpu:
    backend.tune_cpu_compiler()  # as the experiment runners do on the CPU
  if FLAGS.cpu_devices > 1:  # as `--data_parallel` makes them
    jax.config.update('jax_num_cpu_devices', FLAGS.cpu_devices)
    peak = max(matmul_flops_per_second(), FLAGS.matmul_flops_per_second)
    splits = [
        (int(b), True, FLAGS.parallel_micro_batch_size)
        for b in FLAGS.parallel_batch_sizes
    ]
    rows = speed_rows(splits, peak)
    with open(FLAGS.output, 'w') as f:
      json.dump(dict(matmul_flops_per_second=peak, speed=rows), f)
    return

  peak = matmul_flops_per_second()
  xla_flags = os.environ.get('XLA_FLAGS', '')
  print(
      f'{jax.devices()[0].device_kind}: dense f32 matmul {peak / 1e9:.1f} GFLOP/s; '
      f'XLA_FLAGS={xla_flags!r}\n'
  )
  results = dict(
      device=jax.devices()[0].device_kind,
      platform=jax.default_backend(),
      jax=jax.__version__,
      jaxlib=jaxlib.__version__,
      matmul_flops_per_second=peak,
      xla_flags=xla_flags,
      speed=[],
      memory_scaling=[],
      length_scaling=[],
  )

  print(
      'Copy configuration (N=128, M=20, 1 read + 1 write head, length 20 = 41 steps).\n'
      'Data-parallel rows: one CPU device per core, each with its share of the batch (in '
      'micro-batches where\nthe micro column says so). The last two columns time the same '
      'step with only its dense layers\n(everything else free): the most its matmuls allow '
      'at these shapes.'
  )
  print(
      f'{"controller":>11} {"dtype":>8} {"batch":>6} {"devices":>8} {"micro":>6} '
      f'{"step ms":>9} {"fwd ms":>8} '
      f'{"seq/s":>9} {"compile s":>10} {"peak MiB":>9} {"GFLOP/s":>8} {"of matmul":>9} '
      f'{"dense ms":>9} {"of matmul":>9}',
      flush=True,
  )
  results['speed'] = speed_rows([(int(b), False, 0) for b in FLAGS.batch_sizes], peak)
  if FLAGS.parallel_batch_sizes and backend.usable_cores() > 1:
    parallel = data_parallel_rows(peak)
    results['speed'] += parallel['speed']
    results['data_parallel_matmul_flops_per_second'] = parallel['matmul_flops_per_second']
  task = CopyTask()

  sizes = [int(n) for n in FLAGS.memory_sizes]
  if sizes:
    print('\nScaling in memory slots N (batch 32, length 20, LSTM controller)')
  for n in sizes:
    row = measure(_copy_config(batch_size=32, memory_size=n), task, FLAGS.repeats)
    row.update(memory_size=n)
    results['memory_scaling'].append(row)
    print(
        f'  N={n:>6}: {1e3 * row["step_seconds"]:9.1f} ms/step, peak '
        f'{(row["peak_bytes"] or 0) / 2**20:8.1f} MiB'
    )
  if len(sizes) > 1:
    exponent = fitted_exponent(
        sizes, [r['step_seconds'] for r in results['memory_scaling']]
    )
    results['memory_exponent'] = exponent
    print(f'  fitted exponent over the two largest N: {exponent:.2f}')

  lengths = [int(length) for length in FLAGS.lengths]
  if lengths:
    print('\nScaling in sequence length (batch 32, N = 128, LSTM controller)')
  for length in lengths:
    long_task = CopyTask(max_length=length, eval_lengths=(length,))
    row = measure(_copy_config(batch_size=32), long_task, FLAGS.repeats)
    row.update(length=length, time_steps=2 * length + 1)
    results['length_scaling'].append(row)
    print(
        f'  L={length:>5} (T={2 * length + 1:>5}): {1e3 * row["step_seconds"]:9.1f} '
        f'ms/step, peak {(row["peak_bytes"] or 0) / 2**20:8.1f} MiB'
    )
  if len(lengths) > 1:
    exponent = fitted_exponent(
        [2 * length + 1 for length in lengths],
        [r['step_seconds'] for r in results['length_scaling']],
    )
    results['length_exponent'] = exponent
    print(f'  fitted exponent over the two longest T: {exponent:.2f}')

  if FLAGS.packing_members:
    print(
        "\nResidual packing (NTMCell.residual_packing) of the copy experiment's step on "
        "this CPU, timed in turns; never\nis JAX's own residuals, and what the cell's "
        "'auto' traces on a CPU."
    )
    print(
        f'{"members":>8} {"packing":>8} {"step ms":>9} {"x never":>9} {"compile s":>10}'
    )
    results['residual_packing'] = residual_packing_rows()

  with open(FLAGS.output, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'\nWrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
