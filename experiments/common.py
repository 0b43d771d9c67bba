"""Flags every experiment shares, and the main that turns them into a run.

An experiment module defines its task's flags and calls `main(build_task, defaults)`;
everything else (backend choice, config validation, the training loop) lives here or in
the library.
"""

import signal
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from ntm_jax.training import config as config_lib

FLAGS = flags.FLAGS
_DEFAULTS = config_lib.ExperimentConfig(workdir='unused')

flags.DEFINE_enum('accelerator', 'cpu', config_lib.ACCELERATORS,
                  'JAX backend to run on; gpu and tpu need the matching JAX build.')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, report and '
                    'figures; rerunning with the same workdir resumes. Default: '
                    'runs/<task>_<model>_seed<seed>.')
flags.DEFINE_integer('seed', 0, 'Base PRNG seed for parameters and data.')
flags.DEFINE_enum('model', 'ntm', config_lib.MODELS,
                  'ntm, or lstm for the paper\'s LSTM baseline.')
flags.DEFINE_integer('batch_size', None, 'Sequences per training step.')
flags.DEFINE_integer('train_steps', None, 'Number of training steps.')
flags.DEFINE_float('learning_rate', None, 'Learning rate.')
flags.DEFINE_string('optimizer', None, f'One of {", ".join(config_lib.OPTIMIZERS)}.')
flags.DEFINE_string('lr_schedule', None,
                    f'One of {", ".join(config_lib.LR_SCHEDULES)}.')
flags.DEFINE_float('clip', None, 'Gradient clipping threshold.')
flags.DEFINE_string('clip_mode', None, f'One of {", ".join(config_lib.CLIP_MODES)}.')
flags.DEFINE_float('skip_grad_norm', None, 'Skip each step whose gradient, before '
                   'clipping, has a global norm above this or not finite (0: never).')
flags.DEFINE_float('ema_decay', None, 'Also keep this exponential moving average of the '
                   'parameters, and evaluate and ship it (0: no average).')
flags.DEFINE_float('carry_grad_clip', None, 'NTM: clip each entry of the gradient that '
                   'flows back through the cell\'s carry into [-this, this] (0: off).')
flags.DEFINE_float('write_advance_bias', None, 'NTM: start every write head writing one '
                   'slot after another: its gate\'s bias starts at -this, its +1 shift\'s '
                   'at +this (0: all head biases start at 0).')
flags.DEFINE_integer('eval_every', None, 'Evaluate every this many steps.')
flags.DEFINE_integer('checkpoint_every', None, 'Checkpoint every this many steps.')
flags.DEFINE_integer('log_every', None, 'Log training metrics every this many steps.')
flags.DEFINE_integer('eval_batch_size', None, 'Sequences per evaluated difficulty.')
flags.DEFINE_float('target_bit_errors', None, 'Stop once the evaluation on training '
                   'difficulties is below this many bit errors per sequence; 0: never.')
flags.DEFINE_float('entropy_penalty', None, 'NTM: bits added to the training cost per '
                   'bit of entropy of the heads\' weightings; 0: the paper\'s cost alone.')
flags.DEFINE_bool('eval_only', False, 'Evaluate the latest checkpoint in --workdir and '
                  'write the report and figures, without training.')
flags.DEFINE_enum('checkpoint', 'latest', config_lib.CHECKPOINTS,
                  'Which checkpoint --eval_only evaluates: latest, or best, the state of '
                  'the evaluation with the lowest cost during training (kept in '
                  '<workdir>/best).')
flags.DEFINE_bool('plots', True, 'Write PNG figures into the workdir.')
flags.DEFINE_integer('memory_size', None, 'NTM memory slots N.')
flags.DEFINE_integer('word_size', None, 'NTM slot width M.')
flags.DEFINE_integer('num_heads', None, 'NTM read heads (and as many write heads).')
flags.DEFINE_string('controller', None, 'NTM controller: lstm or feedforward.')
flags.DEFINE_integer('controller_features', None, 'Width of a controller layer.')
flags.DEFINE_integer('controller_layers', None, 'Number of controller layers.')
flags.DEFINE_integer('shift_range', None, 'Largest shift offset R of the heads.')
flags.DEFINE_string('memory_init', None, 'constant, learned or random.')
flags.DEFINE_float('memory_stddev', None, 'NTM: scale of the random memory '
                   '(memory_init=random) and of the learned memory\'s starting value.')
flags.DEFINE_integer('lstm_features', None, 'LSTM baseline: units per layer.')
flags.DEFINE_integer('lstm_layers', None, 'LSTM baseline: number of layers.')
flags.DEFINE_string('dtype', None, 'float32, or bfloat16 for the dense computations.')
flags.DEFINE_integer('remat_chunk', None, 'What the NTM backward pass keeps: 0, every '
                     'intermediate (default here: as fast at batch 1); 1, each step\'s '
                     'carry, recomputing the step (faster on a CPU from batch 8); K > 1, '
                     'the carry every K steps (long sequences).')
flags.DEFINE_bool('data_parallel', False, 'Split each batch over all devices (of all '
                  'processes, with the multi-host flags below); on the CPU, one device '
                  'per core.')
flags.DEFINE_integer('micro_batch_size', None, 'Go through each device\'s batch in '
                     'micro-batches of this size (0: all at once), summing their gradients: '
                     'the same update in less memory.')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0, '
                    'for jax.distributed.initialize.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index.')

# Flags whose value, when given, overrides the experiment's default for that config field.
_CONFIG_FLAGS = [name for name in vars(_DEFAULTS) if name not in (
    'workdir', 'seed', 'model', 'plots', 'data_parallel')]


def int_list(flag_name: str) -> tuple[int, ...]:
  """A comma-separated list flag as integers, or a ValueError naming the flag."""
  values = getattr(FLAGS, flag_name)
  try:
    return tuple(int(value) for value in values)
  except ValueError:
    raise ValueError(f'--{flag_name} must be integers, got {values}.') from None


# Every experiment trains its NTM one sequence per step, the paper's recipe. At batch 1,
# recomputing each step in the backward pass (the library's remat_chunk=1) saves no time,
# and storing the intermediates (0) reproduces the runs recorded in docs/RESULTS.md
# exactly rather than up to float rounding (BUILD_NOTES.md, "Training runner invariants").
EXPERIMENT_DEFAULTS = dict(remat_chunk=0)


def make_config(task_name: str, defaults: dict,
                model_defaults: dict | None = None) -> config_lib.ExperimentConfig:
  """The run's config: library < experiment < task defaults (per model) < given flags."""
  values = dict(EXPERIMENT_DEFAULTS, **defaults)
  values.update((model_defaults or {}).get(FLAGS.model, {}))
  for name in _CONFIG_FLAGS:
    if getattr(FLAGS, name) is not None:
      values[name] = getattr(FLAGS, name)
  workdir = FLAGS.workdir or f'runs/{task_name}_{FLAGS.model}_seed{FLAGS.seed}'
  return config_lib.ExperimentConfig(workdir=workdir, seed=FLAGS.seed, model=FLAGS.model,
                                     plots=FLAGS.plots, data_parallel=FLAGS.data_parallel,
                                     **values)


def lstm_baseline_in_batches(features: int, sequences: int, eval_every: int) -> dict:
  """Defaults of the LSTM baseline (3 layers) for a task whose NTM trains at batch 1.

  The baseline sees the same number of sequences in batches of 16 with Adam 1e-3 and
  global-norm clipping: at batch 1 its wide layers run as matrix-vector products that
  re-read the weights at every step, several times slower per sequence on a CPU. The
  NTM's extras (entropy penalty, spike skipping, parameter averaging) are off: the
  baseline's recorded results were measured without them.
  """
  return dict(lstm_features=features, lstm_layers=3, batch_size=16, entropy_penalty=0.0,
              skip_grad_norm=0.0, ema_decay=0.0, carry_grad_clip=0.0,
              write_advance_bias=0.0,
              train_steps=sequences // 16, learning_rate=1e-3, optimizer='adam',
              clip_mode='global_norm', eval_every=eval_every, checkpoint_every=250,
              log_every=50)


def main(build_task: Callable, task_name: str, defaults: dict,
         model_defaults: dict | None = None) -> None:
  """Parses flags into a config and a task, selects the backend, runs."""
  # Imported here so that --accelerator is applied before JAX touches a device.
  from ntm_jax import training

  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO

  try:
    config = make_config(task_name, defaults, model_defaults)
    try:
      task = build_task()
    except ValueError as error:
      raise ValueError(f'{task_name} task flags: {error}') from None
    devices = training.select_accelerator(
        FLAGS.accelerator, FLAGS.coordinator_address, FLAGS.num_processes,
        FLAGS.process_id,
        cpu_devices=training.usable_cores() if FLAGS.data_parallel else None)
  except (ValueError, training.AcceleratorUnavailableError) as error:
    sys.exit(f'error: {error}')
  print(f'{task_name}: model={config.model} on {devices[0].platform} '
        f'({len(devices)} device(s)), workdir={config.workdir}', flush=True)
  signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # preemption saves too
  try:
    training.run(config, task, eval_only=FLAGS.eval_only, checkpoint=FLAGS.checkpoint)
  # ValueError: settings that fail only once the devices are known (a batch that does not
  # split over them, micro-batches that do not split a device's share).
  except (training.NonFiniteLossError, training.WorkdirMismatchError,
          training.WorkdirBusyError, FileNotFoundError, ValueError) as error:
    sys.exit(f'error: {error}')
  except KeyboardInterrupt:
    sys.exit(130)


def _raise_keyboard_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def run(main_fn: Callable) -> None:
  app.run(lambda argv: main_fn() if len(argv) == 1 else sys.exit(
      f'error: unexpected arguments {argv[1:]}; flags look like --name=value.'))
