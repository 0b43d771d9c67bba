"""What the training steps launch on GPUs and TPUs, compiled on a machine without them.

`python -m benchmarks.accelerator_compile` compiles, for each target, the executable XLA
would run there (deviceless ahead-of-time compilation: nothing runs, nothing is placed on
a device) and counts, in its optimised HLO, the kernels one training step launches:

  targets      h100, h200: NVIDIA GPUs described by `benchmarks/targets/<name>.txtpb`
               (GpuTargetConfig protos written from NVIDIA's published figures); needs
               JAX's CUDA plugin. tpu_v5e, tpu_v6e: one chip of a TPU host; needs libtpu.
  workloads    `nn.RNN(NTMCell)` on the copy configuration (N=128, M=20, LSTM 100, one
               read and one write head, sigmoid cross-entropy, clip + RMSProp) at batch
               1, 32 and 512; and every experiment's own training step, NTM and LSTM
               baseline, as one run and as populations of 8 and 256 members.

It prints one table (kernels per forward and backward time step and per training step,
Triton kernels and library calls, the compiler's peak memory against the target's, compile
seconds) and writes the rows to `--output` (JSON). Each experiment compiles in a child
process of its own (an experiment's module registers its flags on import).
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time

# Before JAX starts: the CUDA plugin otherwise probes for a driver and gives up; the
# arrays stay on the CPU; and libtpu, which locks a file per process, lets compilations
# in several processes (the test workers) run at once.
os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS_DIR = os.path.join(ROOT, 'benchmarks', 'targets')
GIB = 2**30
# TPU chips: (topology of one host, HBM per chip from Google's published figures).
TPU_TARGETS = {'tpu_v5e': ('v5e:2x2', 16 * GIB), 'tpu_v6e': ('v6e:2x2', 32 * GIB)}
TARGETS = ('h100', 'h200', *TPU_TARGETS)
EXPERIMENTS = ('copy', 'repeat_copy', 'associative_recall', 'ngrams', 'priority_sort')
MEMBERS = (1, 8, 256)
RNN_BATCH_SIZES = (1, 32, 512)
INSTALL = {
    'cuda': "pip install -e '.[targets]' (JAX's CUDA plugin, jax[cuda13])",
    'tpu': "pip install -e '.[targets]' (libtpu, jax[tpu])",
}


class TargetUnavailableError(RuntimeError):
  """The compiler for a target is not installed."""


@functools.cache
def target(name: str) -> tuple[object, int]:
  """(a single-device sharding on the target, the target's memory in bytes)."""
  import jax
  from jax.experimental import topologies

  if name in TPU_TARGETS:
    topology_name, memory = TPU_TARGETS[name]
    try:
      topology = topologies.get_topology_desc(platform='tpu', topology_name=topology_name)
    except Exception as error:  # noqa: BLE001 - whatever libtpu says, the cure is one
      raise TargetUnavailableError(
          f'cannot compile for {name}: no TPU compiler ({type(error).__name__}); '
          f'install it with {INSTALL["tpu"]}.'
      ) from None
    mesh = jax.sharding.Mesh([topology.devices[0]], ('x',))
  else:
    path = os.path.join(TARGETS_DIR, f'{name}.txtpb')
    with open(path) as f:
      config = f.read()
    memory = int(config.split('device_memory_size:')[1].split()[0])
    try:
      topology = topologies.get_topology_desc(
          platform='cuda', target_config=config, topology='1x1x1'
      )
    except Exception as error:  # noqa: BLE001
      raise TargetUnavailableError(
          f'cannot compile for {name}: no CUDA compiler ({type(error).__name__}); '
          f'install it with {INSTALL["cuda"]}.'
      ) from None
    mesh = topologies.make_mesh(topology, (1,), ('x',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), memory


def compile_for(target_name: str, step, *args, num_steps: int) -> dict:
  """Compiles the jitted `step` for `args` (arrays or ShapeDtypeStructs) on the target:
  kernel counts (`benchmarks.hlo.count_kernels`), peak memory, compile seconds."""
  import jax

  from benchmarks.hlo import count_kernels

  sharding, memory = target(target_name)
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), args
  )
  start = time.perf_counter()
  compiled = step.lower(*abstract).compile()
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  peak = (
      stats.temp_size_in_bytes
      + stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      - stats.alias_size_in_bytes
  )
  return dict(
      count_kernels(compiled.as_text(), num_steps),
      peak_bytes=peak,
      target_bytes=memory,
      fits=peak <= memory,
      compile_seconds=seconds,
  )


def cell_packing(target_name: str) -> str:
  """The residual packing `NTMCell(residual_packing='auto')` takes on the target's
  backend: packed on GPUs only. Deviceless, this process's backend is the CPU."""
  return 'never' if target_name in TPU_TARGETS else 'always'


def rnn_step(batch_size: int, packing: str):
  """`nn.RNN(NTMCell)` on the copy configuration with the cell's residual packing:
  (jitted step, its arguments, steps)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from ntm_jax import NTMCell

  num_steps, width = 41, 9  # copy of length 20 with a delimiter channel
  model = nn.RNN(
      NTMCell(
          features=width - 1,
          memory_size=128,
          word_size=20,
          controller_features=100,
          residual_packing=packing,
      )
  )
  inputs = jax.ShapeDtypeStruct((batch_size, num_steps, width + 1), jnp.float32)
  targets = jax.ShapeDtypeStruct((batch_size, num_steps, width - 1), jnp.float32)
  optimizer = optax.chain(optax.clip(10.0), optax.rmsprop(1e-4, momentum=0.9))
  params = jax.eval_shape(model.init, jax.random.key(0), inputs)
  opt_state = jax.eval_shape(optimizer.init, params)

  def step(params, opt_state, inputs, targets):
    def loss(params):
      logits = model.apply(params, inputs)
      return optax.sigmoid_binary_cross_entropy(logits, targets).mean()

    cost, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, cost

  return jax.jit(step), (params, opt_state, inputs, targets), num_steps


def experiment_config(experiment: str, model: str):
  """An experiment's default config and task for `model`, as its command builds them."""
  import importlib

  from absl import flags

  from experiments import common
  from ntm_jax.training import ExperimentConfig

  module = importlib.import_module(f'experiments.{experiment}')
  if not flags.FLAGS.is_parsed():
    flags.FLAGS([experiment])
  values = dict(common.recipe(module.DEFAULTS, model, module.MODEL_DEFAULTS), model=model)
  return ExperimentConfig(workdir='/unused', **values), module.build_task()


def training_step(config, task, members: int, packing: str):
  """The runner's jitted training step of `config` for one run (members=1) or a
  population of `members` seeds (all stepped at once, as on an accelerator), the NTM
  cell's residuals packed as `packing` says: (step, (its abstract state,), time steps of
  a training sequence)."""
  import jax

  from ntm_jax.training import factory
  from ntm_jax.training import optim
  from ntm_jax.training import population
  from ntm_jax.training import train_state

  model = factory.build_model(config, task)
  if config.model == 'ntm':
    model = model.clone(cell=model.cell.clone(residual_packing=packing))
  optimizer = optim.make_optimizer(config)
  options = dict(
      entropy_penalty=config.entropy_penalty,
      skip_grad_norm=config.skip_grad_norm,
      ema_decay=config.ema_decay,
  )
  ema = bool(config.ema_decay)
  if members == 1:
    keys = train_state.Keys(0)
    state = jax.eval_shape(
        lambda: train_state.create_train_state(model, optimizer, task, keys, ema=ema)
    )
    step = train_state.make_train_step(
        model, optimizer, task, config.batch_size, keys.data, **options
    )
  else:
    seeds = tuple(range(members))
    one = jax.eval_shape(
        lambda: train_state.create_train_state(
            model, optimizer, task, train_state.Keys(0), ema=ema
        )
    )
    members_state = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((members,) + a.shape, a.dtype), one
    )
    state = jax.eval_shape(population.Population.start, members_state)
    step = population.make_population_step(
        model,
        optimizer,
        task,
        config.batch_size,
        seeds,
        members_at_once=members,
        **options,
    )
  num_steps = task.sample_train(jax.random.key(0), 1).inputs.shape[1]
  return step, (state,), num_steps


def worker(args) -> None:
  """One child: an experiment's rows (or the nn.RNN rows), one JSON line each."""
  import jax

  jobs = []
  if args.worker == 'rnn':
    for batch_size in args.batch_sizes:
      jobs.append(
          (
              dict(
                  workload='nn.RNN(NTMCell)',
                  model='ntm',
                  batch_size=batch_size,
                  members=1,
              ),
              functools.partial(rnn_step, batch_size),
          )
      )
  else:
    for model in args.models:
      config, task = experiment_config(args.worker, model)
      for members in args.members:
        jobs.append(
            (
                dict(
                    workload=args.worker,
                    model=model,
                    batch_size=config.batch_size,
                    members=members,
                ),
                functools.partial(training_step, config, task, members),
            )
        )
  for row, build in jobs:
    built = {}
    for name in args.targets:
      packing = cell_packing(name)
      if packing not in built:
        built[packing] = build(packing)
      step, step_args, num_steps = built[packing]
      try:
        result = compile_for(name, step, *step_args, num_steps=num_steps)
      except TargetUnavailableError as error:
        result = dict(error=str(error))
      except jax.errors.JaxRuntimeError as error:
        # A TPU compiler refuses a program larger than the chip's memory.
        message = str(error).splitlines()[0]
        if 'RESOURCE_EXHAUSTED' not in message:
          raise
        result = dict(error=f'does not fit: {message}', fits=False)
      print(
          json.dumps(dict(row, target=name, time_steps=num_steps, **result)), flush=True
      )


def format_table(rows: list[dict]) -> str:
  header = (
      f'{"workload":<20} {"model":<5} {"batch":>5} {"members":>7} {"target":<8} '
      f'{"fwd/step":>8} {"bwd/step":>8} {"kernels":>8} {"triton":>7} {"library":>7} '
      f'{"peak MiB":>9} {"fits":>4} {"compile s":>9}'
  )
  lines = [header]
  for row in rows:
    start = (
        f'{row["workload"]:<20} {row["model"]:<5} {row["batch_size"]:>5} '
        f'{row["members"]:>7} {row["target"]:<8} '
    )
    if 'error' in row:
      lines.append(start + row['error'])
      continue
    lines.append(
        start
        + (
            f'{row["forward_per_step"]:8.1f} {row["backward_per_step"]:8.1f} '
            f'{row["total"]:8d} {row["triton"]:7d} {row["custom_calls"]:7d} '
            f'{row["peak_bytes"] / 2**20:9.1f} {"yes" if row["fits"] else "NO":>4} '
            f'{row["compile_seconds"]:9.1f}'
        )
    )
  return '\n'.join(lines)


def _list(kind):
  return lambda text: [kind(value) for value in text.split(',') if value]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--targets',
      type=_list(str),
      default=list(TARGETS),
      help=f'comma-separated, of {",".join(TARGETS)}',
  )
  parser.add_argument(
      '--workloads',
      type=_list(str),
      default=['rnn', *EXPERIMENTS],
      help=f'comma-separated, of rnn,{",".join(EXPERIMENTS)}',
  )
  parser.add_argument('--models', type=_list(str), default=['ntm', 'lstm'])
  parser.add_argument('--members', type=_list(int), default=list(MEMBERS))
  parser.add_argument(
      '--batch_sizes',
      type=_list(int),
      default=list(RNN_BATCH_SIZES),
      help='batch sizes of the nn.RNN(NTMCell) rows',
  )
  parser.add_argument(
      '--output', default=os.path.join(ROOT, 'benchmarks', 'accelerator_compile.json')
  )
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = (
      (set(args.targets) - set(TARGETS))
      | (set(args.workloads) - {'rnn', *EXPERIMENTS})
      | (set(args.models) - {'ntm', 'lstm'})
  )
  if unknown:
    parser.error(
        f'unknown --targets, --workloads or --models value(s): '
        f'{", ".join(sorted(unknown))}'
    )
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    worker(args)
    return
  for name in args.targets:  # one line, before any work, if a compiler is missing
    try:
      target(name)
    except TargetUnavailableError as error:
      sys.exit(f'error: {error}')
  rows = []
  for workload in args.workloads:
    command = [
        sys.executable,
        '-m',
        'benchmarks.accelerator_compile',
        f'--worker={workload}',
        '--targets=' + ','.join(args.targets),
        '--models=' + ','.join(args.models),
        '--members=' + ','.join(map(str, args.members)),
        '--batch_sizes=' + ','.join(map(str, args.batch_sizes)),
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    found = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')
    ]
    if result.returncode:
      last = (result.stderr.strip().splitlines() or ['no output'])[-1]
      print(f'{workload}: failed ({last})', file=sys.stderr)
    rows += found
    print(
        format_table(found).split('\n', 1)[-1]
        if len(rows) > len(found)
        else format_table(found),
        flush=True,
    )
  with open(args.output, 'w') as f:
    json.dump(dict(rows=rows), f, indent=1)
  print(f'Wrote {args.output}')


if __name__ == '__main__':
  main()
