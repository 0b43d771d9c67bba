"""Flags every experiment shares, and the main that turns them into a run.

An experiment module defines its task's flags, calls `define_flags(DEFAULTS,
MODEL_DEFAULTS)` with its recipe (so that `--helpfull` shows the values it will use,
grouped: model, optimiser, training loop, evaluation, devices, run) and calls
`main(build_task, ...)`; everything else (backend choice, config validation, the training
loop) lives here or in the library.
"""

from collections.abc import Callable
import dataclasses
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from ntm_jax.training import config as config_lib
from ntm_jax.training.backend import usable_cores
from ntm_jax.training.population import parse_seeds

FLAGS = flags.FLAGS

# The flags of the run itself, whatever the experiment.
flags.DEFINE_enum(
    'accelerator',
    'cpu',
    config_lib.ACCELERATORS,
    'JAX backend to run on; gpu and tpu need the matching JAX build. On gpu '
    'or tpu, without --population, each run is a population of 8 (the '
    'accelerator recipe).',
    module_name='devices',
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-host: host:port of process 0, ' 'for jax.distributed.initialize.',
    module_name='devices',
)
flags.DEFINE_integer(
    'num_processes', None, 'Multi-host: number of processes.', module_name='devices'
)
flags.DEFINE_integer(
    'process_id', None, "Multi-host: this process's index.", module_name='devices'
)
flags.DEFINE_string(
    'workdir',
    None,
    'Directory for checkpoints, metrics, report and '
    'figures; rerunning with the same workdir resumes. Default: '
    'runs/<task>_<model>_seed<seed>.',
    module_name='run',
)
flags.DEFINE_integer(
    'seed', 0, 'Base PRNG seed for parameters and data.', module_name='run'
)
flags.DEFINE_string(
    'seeds',
    '',
    'Train a population, one run per seed, in one jitted '
    'step: 0-9, 3,7,11 or 0-3,8. Member k is the run --seed=k; the report '
    'has a row per member and names the best. Empty: one run of --seed.',
    module_name='run',
)
flags.DEFINE_string(
    'member',
    None,
    'With --eval_only and --seeds: evaluate one member '
    '(its seed, or best) as its single run would be evaluated, into '
    '<workdir>/member_seed<seed>/.',
    module_name='run',
)
flags.DEFINE_bool(
    'eval_only',
    False,
    'Evaluate the latest checkpoint in --workdir and '
    'write the report and figures, without training.',
    module_name='run',
)
flags.DEFINE_enum(
    'checkpoint',
    'latest',
    config_lib.CHECKPOINTS,
    'Which checkpoint --eval_only evaluates: latest, or best, the state of '
    'the evaluation with the lowest cost during training (kept in '
    '<workdir>/best).',
    module_name='run',
)

# Every config field that is a flag: its group in --helpfull and its help. The default
# each experiment shows is the value it will use (`define_flags`).
CONFIG_FLAGS = {
    'model': ('model', "ntm, or lstm for the paper's LSTM baseline."),
    'memory_size': ('model', 'NTM memory slots N.'),
    'word_size': ('model', 'NTM slot width M.'),
    'num_heads': ('model', 'NTM read heads (and as many write heads).'),
    'controller': ('model', 'NTM controller: lstm or feedforward.'),
    'controller_features': ('model', 'Width of a controller layer.'),
    'controller_layers': ('model', 'Number of controller layers.'),
    'shift_range': ('model', 'Largest shift offset R of the heads.'),
    'memory_init': ('model', 'constant, learned or random.'),
    'memory_stddev': (
        'model',
        'NTM: scale of the random memory (memory_init=random) and '
        "of the learned memory's starting value.",
    ),
    'write_advance_bias': (
        'model',
        'NTM: start every write head writing one slot after '
        "another: its gate's bias starts at -this, its +1 shift's "
        'at +this (0: all head biases start at 0).',
    ),
    'lstm_features': ('model', 'LSTM baseline: units per layer.'),
    'lstm_layers': ('model', 'LSTM baseline: number of layers.'),
    'dtype': ('model', 'float32, or bfloat16 for the dense computations.'),
    'remat_chunk': (
        'model',
        'What the NTM backward pass keeps: 0, every intermediate; 1, '
        "each step's carry, recomputing the step (faster on a CPU from batch "
        '8); K > 1, the carry every K steps (long sequences).',
    ),
    'optimizer': ('optimiser', f'One of {", ".join(config_lib.OPTIMIZERS)}.'),
    'learning_rate': ('optimiser', 'Learning rate.'),
    'lr_schedule': ('optimiser', f'One of {", ".join(config_lib.LR_SCHEDULES)}.'),
    'clip': ('optimiser', 'Gradient clipping threshold.'),
    'clip_mode': ('optimiser', f'One of {", ".join(config_lib.CLIP_MODES)}.'),
    'skip_grad_norm': (
        'optimiser',
        'Skip each step whose gradient, before clipping, has a '
        'global norm above this or not finite (0: never).',
    ),
    'carry_grad_clip': (
        'optimiser',
        'NTM: clip each entry of the gradient that flows '
        "back through the cell's carry into [-this, this] (0: off).",
    ),
    'ema_decay': (
        'optimiser',
        'Also keep this exponential moving average of the '
        'parameters, and evaluate and ship it (0: no average).',
    ),
    'entropy_penalty': (
        'optimiser',
        'NTM: bits added to the training cost per bit of '
        "entropy of the heads' weightings; 0: the paper's cost alone.",
    ),
    'batch_size': ('training loop', 'Sequences per training step.'),
    'train_steps': ('training loop', 'Number of training steps.'),
    'log_every': ('training loop', 'Log training metrics every this many steps.'),
    'checkpoint_every': ('training loop', 'Checkpoint every this many steps.'),
    'target_bit_errors': (
        'training loop',
        'Stop once the evaluation on training '
        'difficulties is below this many bit errors per sequence; 0: '
        'never.',
    ),
    'restart_after': (
        'training loop',
        'Restart from a fresh initialisation (new '
        'parameters, the data going on) any attempt that goes this many '
        'steps without an evaluation below 1 bit error per sequence (N-grams: '
        'within 15% above the optimum; never learned, or collapsed); 0: '
        'never.',
    ),
    'stop_when_generalising': (
        'training loop',
        'Stop once an evaluation has converged '
        '(< 0.1 bit errors per sequence on the training mix) and '
        'makes < 0.1 on 2,048 check sequences of the hardest '
        'evaluated difficulty.',
    ),
    'eval_every': ('evaluation', 'Evaluate every this many steps.'),
    'eval_batch_size': (
        'evaluation',
        'Sequences of the training mix per evaluation, and '
        'of each generalisation difficulty unless '
        '--generalisation_batch_size.',
    ),
    'generalisation_batch_size': (
        'evaluation',
        'Sequences per generalisation difficulty ' 'in the report; 0: --eval_batch_size.',
    ),
    'plots': ('evaluation', 'Write PNG figures into the workdir.'),
    'data_parallel': (
        'devices',
        'Split each batch, or a population, over all devices (of all '
        'processes: always on with --num_processes above 1); on the CPU, one '
        'device per core (a population: as many as split it evenly).',
    ),
    'members_at_once': (
        'devices',
        'With --seeds: members each device steps at once; '
        '0 chooses (all on an accelerator, 4 at a time on a CPU); k, k at '
        'a time (lax.map: less memory).',
    ),
    'micro_batch_size': (
        'devices',
        "Go through each device's batch in micro-batches of "
        'this size (0: all at once), summing their gradients: the same '
        'update in less memory.',
    ),
}

# Every experiment trains its NTM one sequence per step, the paper's recipe. At batch 1,
# recomputing each step in the backward pass (the library's remat_chunk=1) saves no time,
# and storing the intermediates (0) reproduces the runs recorded in docs/RESULTS.md
# exactly rather than up to float rounding (BUILD_NOTES.md, "Training runner invariants").
EXPERIMENT_DEFAULTS = dict(remat_chunk=0)


# The accelerator recipe: on a GPU or TPU a batch-1 step is bound by kernel launches, not
# arithmetic, so several independent runs in one step (a population) cost about what one
# does, and the best of several seeds answers NTM training's lottery over seeds (the best
# member: the fewest bit errors, or the lowest cost, over every evaluated set, among the
# members that fit the training mix; population.overall_score).
ACCELERATOR_POPULATION = 8


def population_seeds() -> str:
  """The run's seeds as --seeds writes them ('' for one run): --seeds if given, else a
  population of --population seeds from --seed on. Without --population: the
  experiment's NTM recipe on a CPU (its flag default), the accelerator recipe on a GPU or
  TPU, one run of the LSTM baseline on a CPU. A ValueError names the flag at fault."""
  if FLAGS.seeds:
    if FLAGS['population'].present:
      raise ValueError(
          '--population and --seeds exclude each other: --seeds names every '
          'seed of the population.'
      )
    if FLAGS['seed'].present:
      raise ValueError(
          '--seed and --seeds exclude each other: --seeds=S trains the '
          'population of the runs --seed=S.'
      )
    return FLAGS.seeds
  if FLAGS['population'].present or (FLAGS.accelerator == 'cpu' and FLAGS.model == 'ntm'):
    size = FLAGS.population
  else:
    size = ACCELERATOR_POPULATION if FLAGS.accelerator != 'cpu' else 1
  if size < 1:
    raise ValueError(f'--population must be 1 (one run) or more; got {size}.')
  return '' if size == 1 else f'{FLAGS.seed}-{FLAGS.seed + size - 1}'


def recipe(
    defaults: dict, model: str = 'ntm', model_defaults: dict | None = None
) -> dict:
  """The config values an experiment uses for `model`, flags aside: the library's
  defaults, overridden by the experiment's and, for the LSTM baseline, by its own."""
  library = {
      field.name: field.default
      for field in dataclasses.fields(config_lib.ExperimentConfig)
      if field.default is not dataclasses.MISSING
  }
  values = dict(library)
  for layer in (EXPERIMENT_DEFAULTS, defaults, (model_defaults or {}).get(model, {})):
    values.update(layer)
  return values


def define_flags(
    defaults: dict, model_defaults: dict | None = None, population: int = 1
) -> None:
  """Defines a flag per config field, its default the value this experiment uses, and
  --population, whose default `population` is the NTM recipe's number of members on a
  CPU.

  A flag whose value the LSTM baseline's recipe changes says so in its help; with
  `--model=lstm` that value applies unless the flag is given.
  """
  flags.DEFINE_integer(
      'population',
      population,
      'Members of each run: K > 1 trains the runs of seeds '
      '--seed to --seed+K-1 as one population (as --seeds does) and names the best '
      'member; 1, one run of --seed. Without the flag: this value for the NTM on a CPU, '
      f'one run for --model=lstm, {ACCELERATOR_POPULATION} on a GPU or TPU.',
      module_name='run',
  )
  values = recipe(defaults, 'ntm', model_defaults)
  lstm = (model_defaults or {}).get('lstm', {})
  for name, (group, help_text) in CONFIG_FLAGS.items():
    if name in lstm and lstm[name] != values[name]:
      help_text += f' With --model=lstm: {lstm[name]}.'
    kind = config_lib.ExperimentConfig.__dataclass_fields__[name].type
    define = {
        bool: flags.DEFINE_bool,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }[kind]
    define(name, values[name], help_text, module_name=group)


def int_list(flag_name: str) -> tuple[int, ...]:
  """A comma-separated list flag as integers, or a ValueError naming the flag."""
  values = getattr(FLAGS, flag_name)
  try:
    return tuple(int(value) for value in values)
  except ValueError:
    raise ValueError(f'--{flag_name} must be integers, got {values}.') from None


def population_devices(size: int, cores: int) -> int:
  """The CPU devices a population of `size` members splits over: the most, at one per
  core, that take equal shares (six members on four cores: three devices of two)."""
  return max(d for d in range(1, cores + 1) if size % d == 0)


def cpu_devices(config: config_lib.ExperimentConfig) -> int | None:
  """The JAX devices a data-parallel run makes of this host's CPU: one per core, or for
  a population as many as split it evenly; None (one device) without --data_parallel."""
  if not config.data_parallel:
    return None
  if config.seeds:
    return population_devices(len(config.seeds), usable_cores())
  return usable_cores()


def make_config(
    task_name: str, defaults: dict, model_defaults: dict | None = None
) -> config_lib.ExperimentConfig:
  """The run's config: the experiment's recipe for the chosen model, then given flags."""
  values = recipe(defaults, FLAGS.model, model_defaults)
  for name in CONFIG_FLAGS:
    if FLAGS[name].present or name not in (model_defaults or {}).get(FLAGS.model, {}):
      values[name] = getattr(FLAGS, name)
  seeds_text = population_seeds()
  seeds = parse_seeds(seeds_text) if seeds_text else ()
  # Several processes split the members, or a run's batch, over all their devices: a
  # copy of the whole run in each process would only repeat the work.
  if (FLAGS.num_processes or 1) > 1:
    if FLAGS['data_parallel'].present and not FLAGS.data_parallel:
      raise ValueError(
          '--nodata_parallel: a run over several processes (--num_processes) splits '
          'its work over all their devices; leave --data_parallel on.'
      )
    values['data_parallel'] = True
  # On a CPU a population spreads over the cores (one device each): four copy members
  # step in 6.3 ms on two cores, 9.5 ms on one (docs/BENCHMARKS.md).
  if (
      seeds
      and not FLAGS['data_parallel'].present
      and FLAGS.accelerator == 'cpu'
      and FLAGS.coordinator_address is None
      and population_devices(len(seeds), usable_cores()) > 1
  ):
    values['data_parallel'] = True
  name = f'seeds{seeds_text}' if seeds else f'seed{FLAGS.seed}'
  workdir = FLAGS.workdir or f'runs/{task_name}_{FLAGS.model}_{name}'
  values.update(workdir=workdir, seed=FLAGS.seed, seeds=seeds)
  return config_lib.ExperimentConfig(**values)


def member_flag():
  """--member as run() takes it: None, 'best' or a seed; a ValueError naming the flag."""
  if FLAGS.member is None or FLAGS.member == 'best':
    return FLAGS.member
  try:
    return int(FLAGS.member)
  except ValueError:
    raise ValueError(
        f'--member must be best or a seed of the population; got ' f'{FLAGS.member!r}.'
    ) from None


def lstm_baseline_in_batches(features: int, sequences: int, eval_every: int) -> dict:
  """Defaults of the LSTM baseline (3 layers) for a task whose NTM trains at batch 1.

  The baseline sees the same number of sequences in batches of 16 with Adam 1e-3 and
  global-norm clipping: at batch 1 its wide layers run as matrix-vector products that
  re-read the weights at every step, several times slower per sequence on a CPU. The
  NTM's extras (entropy penalty, spike skipping, parameter averaging, restarts) are
  off: the baseline's recorded results were measured without them.
  """
  return dict(
      lstm_features=features,
      lstm_layers=3,
      batch_size=16,
      entropy_penalty=0.0,
      skip_grad_norm=0.0,
      ema_decay=0.0,
      carry_grad_clip=0.0,
      write_advance_bias=0.0,
      restart_after=0,
      train_steps=sequences // 16,
      learning_rate=1e-3,
      optimizer='adam',
      clip_mode='global_norm',
      eval_every=eval_every,
      checkpoint_every=250,
      log_every=50,
  )


def main(
    build_task: Callable,
    task_name: str,
    defaults: dict,
    model_defaults: dict | None = None,
) -> None:
  """Parses flags into a config and a task, selects the backend, runs."""
  # Imported here so that --accelerator is applied before JAX touches a device.
  from ntm_jax import training

  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO

  try:
    config = make_config(task_name, defaults, model_defaults)
    member = member_flag()
    try:
      task = build_task()
    except ValueError as error:
      raise ValueError(f'{task_name} task flags: {error}') from None
    devices = training.select_accelerator(
        FLAGS.accelerator,
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        cpu_devices=cpu_devices(config),
    )
  except (ValueError, training.AcceleratorUnavailableError) as error:
    sys.exit(f'error: {error}')
  if FLAGS.coordinator_address is not None:
    # Orbax's save and restore barriers otherwise run as device collectives, which can
    # interleave with the training step's own collectives differently in each process
    # (on the CPU, gloo then aborts); the coordination service's barrier cannot.
    FLAGS.experimental_orbax_use_distributed_barrier = True
  import jax  # noqa: PLC0415 - after the backend is chosen

  if jax.process_index() > 0:  # every process prints the same: process 0 speaks for all
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the C++ logs too
  if config.seeds and not FLAGS.seeds:
    print(
        f'The population of seeds {population_seeds()} (--population='
        f'{len(config.seeds)}), its best member named at the end; --population=1 '
        'trains one run.',
        flush=True,
    )
  runs = (
      f'population of {len(config.seeds)} (seeds {population_seeds()})'
      if config.seeds
      else f'seed {config.seed}'
  )
  print(
      f'{task_name}: model={config.model}, {runs}, on {devices[0].platform} '
      f'({len(devices)} device(s)), workdir={config.workdir}',
      flush=True,
  )
  # Preemption saves too: training stops at the next step boundary, as after Ctrl-C.
  signal.signal(signal.SIGTERM, lambda signum, frame: training.loop.STOP_REQUESTED.set())
  try:
    training.run(
        config,
        task,
        eval_only=FLAGS.eval_only,
        checkpoint=FLAGS.checkpoint,
        member=member,
    )
  # ValueError: settings that fail only once the devices are known (a batch that does not
  # split over them, micro-batches that do not split a device's share).
  except (
      training.NonFiniteLossError,
      training.WorkdirMismatchError,
      training.WorkdirBusyError,
      FileNotFoundError,
      ValueError,
  ) as error:
    sys.exit(f'error: {error}')
  except KeyboardInterrupt:
    sys.exit(130)


def run(main_fn: Callable) -> None:
  app.run(
      lambda argv: main_fn()
      if len(argv) == 1
      else sys.exit(
          f'error: unexpected arguments {argv[1:]}; flags look like --name=value.'
      )
  )
