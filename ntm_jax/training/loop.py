"""Training and evaluation of any model on any task: the shared experiment runner.

The training step is jitted once on fixed shapes (tasks pad and mask), draws its batch on
the device from `fold_in(data_key, step)`, and donates the old state. Because the batch
(and, for memory_init='random', the starting memory) depends only on the seed and the
step, a resumed run sees exactly the data an uninterrupted one would have.
"""

import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Callable

try:
  import fcntl
except ImportError:  # fcntl is POSIX only: on Windows, runs go without the workdir lock
  fcntl = None

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ntm_jax import models
from ntm_jax.cell import HeadLayout
from ntm_jax.cell import NTMCell
from ntm_jax.cell import head_bias_init
from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.training import checkpointing
from ntm_jax.training import metrics as metrics_lib
from ntm_jax.training import plots
from ntm_jax.training.config import CHECKPOINTS
from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.optim import make_optimizer

# The first evaluation with fewer bit errors per sequence than this counts as converged.
CONVERGED_BIT_ERRORS = 0.1
# A step's random starting memories (memory_init='random') come from
# fold_in(step's data key, MEMORY_STREAM): like its batch, a function of seed and step only.
MEMORY_STREAM = 7

# {'step': int32 scalar, 'params': pytree, 'opt_state': pytree} and, with an ema_decay,
# 'ema_params': the moving average of 'params'.
TrainState = dict


def evaluated_params(state: TrainState):
  """The parameters a run evaluates, reports and ships: the average where it keeps one."""
  return state.get('ema_params', state['params'])


class NonFiniteLossError(FloatingPointError):
  """The training loss stopped being finite; the last good checkpoint is kept."""


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of another model: it cannot be resumed with these flags."""


class WorkdirBusyError(RuntimeError):
  """Another training run holds the workdir: the two would overwrite each other's saves."""


@contextlib.contextmanager
def _workdir_lock(workdir: str):
  """An exclusive lock on the workdir for as long as this process trains in it.

  One lock file per JAX process, so that the processes of one multi-host run share a
  workdir while a second launch on it stops at once. The operating system releases the
  lock when the process ends, however it ends, so a killed run never leaves it behind.
  """
  if fcntl is None:
    yield
    return
  with open(os.path.join(workdir, f'.run-{jax.process_index()}.lock'), 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'unknown'
      raise WorkdirBusyError(
          f'--workdir={workdir} is in use by another run (process {holder}). Wait for it '
          'to end (after SIGTERM or Ctrl-C it saves a checkpoint first, then exits), or '
          'choose another --workdir.') from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def build_model(config: ExperimentConfig, task: Task) -> nn.Module:
  dtype = jnp.bfloat16 if config.dtype == 'bfloat16' else jnp.float32
  if config.model == 'lstm':
    return models.LSTMBaseline(features=task.output_size,
                               hidden_features=config.lstm_features,
                               num_layers=config.lstm_layers, dtype=dtype)
  cell = NTMCell(
      features=task.output_size, memory_size=config.memory_size,
      word_size=config.word_size, num_read_heads=config.num_heads,
      num_write_heads=config.num_heads, controller=config.controller,
      controller_features=config.controller_features,
      controller_layers=config.controller_layers, shift_range=config.shift_range,
      memory_init=config.memory_init, memory_stddev=config.memory_stddev, dtype=dtype)
  if config.write_advance_bias:
    cell = cell.clone(head_bias_init=advancing_write_heads(cell.head_layout,
                                                           config.write_advance_bias))
  return models.NTM(cell, remat_chunk=config.remat_chunk,
                    carry_grad_clip=config.carry_grad_clip)


def advancing_write_heads(layout: HeadLayout, bias: float):
  """A head bias initializer: write heads start by writing one slot after another.

  Each write head's gate starts at -bias and its +1 shift logit at +bias, so at first it
  keeps its previous focus and moves it on by one slot per step, as a list is written
  (`ExperimentConfig.write_advance_bias`).
  """
  return head_bias_init(layout, write={'gate': -bias, ('shift', 1): bias})


class Keys:
  """The run's PRNG keys, all derived from the one seed."""

  def __init__(self, seed: int):
    base = jax.random.key(seed)
    self.params = jax.random.fold_in(base, 0)
    self.data = jax.random.fold_in(base, 1)
    self.eval = jax.random.fold_in(base, 2)
    self.figures = jax.random.fold_in(base, 3)

  def eval_batch(self, difficulty) -> jax.Array:
    """A fixed evaluation set per difficulty (None: the training distribution)."""
    if difficulty is None:
      return jax.random.fold_in(self.eval, 0)
    key = self.eval
    for part in difficulty if isinstance(difficulty, tuple) else (difficulty,):
      key = jax.random.fold_in(key, 1 + part)
    return key


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       task: Task, keys: Keys) -> TrainState:
  sample = task.sample_train(keys.data, 1)
  params = model.init(keys.params, sample.inputs)
  return dict(step=jnp.array(0, jnp.int32), params=params,
              opt_state=optimizer.init(params))


def make_mesh(batch_size: int) -> jax.sharding.Mesh:
  """A mesh over all devices along the batch axis, for data-parallel training."""
  num_devices = jax.device_count()
  if batch_size % num_devices:
    raise ValueError(f'batch_size={batch_size} must be divisible by the number of '
                     f'devices ({num_devices}) for data-parallel training.')
  # An Auto axis: XLA's sharding propagation partitions the step from the batch's sharding.
  return jax.make_mesh((num_devices,), ('batch',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicate(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  """The state on every device of `mesh`, as the data-parallel step expects it."""
  return jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, task: Task,
                    batch_size: int, data_key: jax.Array,
                    mesh: jax.sharding.Mesh | None = None,
                    micro_batch_size: int = 0, entropy_penalty: float = 0.0,
                    skip_grad_norm: float = 0.0, ema_decay: float = 0.0) -> Callable:
  """A jitted (state) -> (state, metrics) training step that donates its input state.

  With a `mesh`, each device takes its slice of the batch (`shard_map` over the mesh's
  'batch' axis) and the gradients are summed over devices, so the result is that of one
  device at the same global batch. With a `micro_batch_size`, each device goes through its
  slice in micro-batches of that size (a `lax.scan` that sums their gradients): the same
  update, computed on smaller arrays, which a CPU runs faster (docs/history, "Speed").
  With an `entropy_penalty` (NTM only) the gradients are those of the cost plus that
  multiple of the weightings' entropy (ExperimentConfig.entropy_penalty); the metrics
  stay the paper's cost and bit errors. With a `skip_grad_norm` (the optimiser's guard,
  optim.skip_large_gradients), the metrics also say which steps it skipped. With an
  `ema_decay`, the state's 'ema_params' follow the parameters by that moving average.
  """
  num_devices = 1 if mesh is None else mesh.size
  per_device = batch_size // num_devices
  micro = micro_batch_size or per_device
  if per_device % micro:
    raise ValueError(f'micro_batch_size={micro_batch_size} must divide the batch on each '
                     f'device: batch_size={batch_size} over {num_devices} device(s).')

  def sums(params, batch, memory_key):
    """Summed cost, bit errors and cost gradients over one micro-batch."""
    def objective(params):
      # With a penalty the NTM also returns the weightings it recorded at every step.
      logits, recorded = model.apply(params, batch.inputs, rngs={'memory': memory_key},
                                     mutable=['intermediates'] if entropy_penalty else [])
      cost = jnp.sum(metrics_lib.cost_per_sequence(logits, batch))
      if not entropy_penalty:
        return cost, (cost, logits)
      entropy = sum(jnp.sum(metrics_lib.weighting_entropy_per_sequence(weights, batch))
                    for (weights,) in recorded['intermediates']['cell'].values())
      return cost + entropy_penalty * entropy, (cost, logits)

    (_, (cost, logits)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return cost, jnp.sum(metrics_lib.bit_errors_per_sequence(logits, batch)), grads

  def device_sums(params, batch, memory_key):
    """`sums` over this device's slice of the batch, in micro-batches, then all devices."""
    if mesh is not None:  # each device draws its own random memories
      memory_key = jax.random.fold_in(memory_key, jax.lax.axis_index('batch'))
    if per_device > micro:
      def accumulate(totals, micro_batch_and_key):
        return jax.tree.map(jnp.add, totals, sums(params, *micro_batch_and_key)), None

      num_micro = per_device // micro
      micro_batches = jax.tree.map(  # every Batch field has the batch axis first
          lambda x: x.reshape((num_micro, micro) + x.shape[1:]), batch)
      zeros = jax.tree.map(jnp.zeros_like,
                           jax.eval_shape(sums, params, batch, memory_key))
      totals, _ = jax.lax.scan(accumulate, zeros,
                               (micro_batches, jax.random.split(memory_key, num_micro)))
    else:
      totals = sums(params, batch, memory_key)
    return totals if mesh is None else jax.lax.psum(totals, 'batch')

  if mesh is not None:
    P = jax.sharding.PartitionSpec  # noqa: N806 - the usual short name
    # check_vma=False: the models' scans start from carries made of (replicated)
    # parameters and take per-device inputs, which the varying-axes check rejects.
    device_sums = jax.shard_map(device_sums, mesh=mesh,
                                in_specs=(P(), P('batch'), P()), out_specs=P(),
                                check_vma=False)

  def train_step(state):
    step_key = jax.random.fold_in(data_key, state['step'])
    batch = task.sample_train(step_key, batch_size)
    # The step's random starting memories (memory_init='random'; unused otherwise).
    memory_key = jax.random.fold_in(step_key, MEMORY_STREAM)
    cost, bit_errors, grads = device_sums(state['params'], batch, memory_key)
    grads = jax.tree.map(lambda g: g / batch_size, grads)  # of the mean cost
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    grad_norm = optax.global_norm(grads)
    metrics = dict(cost=cost / batch_size, bit_errors=bit_errors / batch_size,
                   grad_norm=grad_norm)
    if skip_grad_norm:  # the fraction of steps the optimiser skipped (optim.py)
      metrics['skipped'] = jnp.logical_not(grad_norm <= skip_grad_norm).astype(jnp.float32)
    new_state = dict(step=state['step'] + 1, params=params, opt_state=opt_state)
    if ema_decay:
      new_state['ema_params'] = optax.incremental_update(params, state['ema_params'],
                                                         1 - ema_decay)
    return new_state, metrics

  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(train_step, donate_argnums=0, out_shardings=replicated)


def eval_set(task: Task, keys: Keys, difficulty, batch_size: int) -> Batch:
  """The run's fixed evaluation sequences for a difficulty (None: the training mix)."""
  key = keys.eval_batch(difficulty)
  if difficulty is None:
    return task.sample_train(key, batch_size)
  return task.sample_eval(key, batch_size, difficulty)


def make_evaluator(model: nn.Module, task: Task, keys: Keys,
                   batch_size: int) -> Callable[[Any, Any], dict[str, float]]:
  """(params, difficulty) -> mean cost and bit errors per sequence on a fixed eval set.

  For tasks with a reference predictor (N-grams' optimal estimator) the result also has
  its mean cost, `reference_cost`, on the same sequences.
  """

  @jax.jit
  def evaluate_batch(params, batch):
    results = metrics_lib.summarize(model.apply(params, batch.inputs), batch)
    reference = task.reference_cost(batch)
    if reference is not None:
      results['reference_cost'] = jnp.mean(reference)
    return results

  def evaluate(params, difficulty):
    batch = eval_set(task, keys, difficulty, batch_size)
    return {name: float(value) for name, value in evaluate_batch(params, batch).items()}

  return evaluate


class _Progress:
  """A one-line progress bar on a terminal, plain log lines otherwise."""

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self.interactive = sys.stderr.isatty()

  def update(self, step: int, sequences_per_second: float, cost: float,
             bit_errors: float) -> None:
    done = step / self.total_steps
    line = (f'step {step}/{self.total_steps} [{"#" * int(20 * done):<20}] '
            f'{sequences_per_second:7.1f} seq/s  cost {cost:8.3f} bits  '
            f'bit errors {bit_errors:7.3f}')
    if self.interactive:
      print('\r' + line, end='', file=sys.stderr, flush=True)
    else:
      print(line, flush=True)

  def newline(self) -> None:
    if self.interactive:
      print(file=sys.stderr, flush=True)


class _MetricsLog:
  """metrics.jsonl in the workdir: one JSON object per logged train window or eval."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, metrics_lib.LOG_NAME)
    # A resumed run repeats the steps after its checkpoint: drop what they logged before.
    kept = [record for record in self.read(workdir) if record['step'] <= resume_step]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(record) + '\n' for record in kept)

  @staticmethod
  def read(workdir: str) -> list[dict]:
    """The workdir's records; none for a fresh workdir."""
    try:
      return metrics_lib.read_log(workdir)
    except FileNotFoundError:
      return []

  def write(self, record: dict) -> None:
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def _check_config(workdir: str, config: ExperimentConfig, task: Task,
                  resuming: bool) -> None:
  """Refuses to resume a checkpoint its state does not fit; records the config.

  The model's shapes and the task's input and output widths fix the parameters, the
  optimiser and whether its rate is scheduled fix the optimiser state: a change to any of
  them would fail inside Orbax's restore. Other task settings may change on resuming (a
  curriculum does), but not unnoticed: the run says which.
  """
  path = os.path.join(workdir, 'config.json')
  current = dict(task=task.name, **config.model_fields(), input_size=task.input_size,
                 output_size=task.output_size)
  settings = task.settings()
  if resuming and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    # Only what the file records is compared: one from before the optimiser fields, the
    # task's widths or its settings were recorded cannot tell about them.
    fixed = dict(current, optimizer=config.optimizer, lr_schedule=config.lr_schedule)
    changed = ', '.join(f'{name}: {saved[name]!r} -> {value!r}'
                        for name, value in fixed.items()
                        if name in saved and saved[name] != value)
    if changed:
      raise WorkdirMismatchError(
          f'--workdir={workdir} holds a run with a different model, task width or '
          f'optimiser ({changed}); resume it with the same flags or choose a new '
          '--workdir.')
    recorded = saved.get('task_settings')
    if recorded is not None:
      now = json.loads(json.dumps(settings))  # as JSON holds them: tuples as lists
      changed = ', '.join(f'{name}: {recorded.get(name)!r} -> {now[name]!r}'
                          for name in now if recorded.get(name) != now[name])
      if changed:
        print(f'Note: resuming with other task settings than {path} records '
              f'({changed}); training goes on with the new ones.', flush=True)
  with open(path, 'w') as f:
    json.dump(dict(current, **{k: v for k, v in vars(config).items()
                               if k not in current}, task_settings=settings), f, indent=2)


def evaluate_all(evaluate: Callable, params, task: Task) -> dict:
  """Training distribution and every generalisation difficulty of the task."""
  results = {'train': evaluate(params, None)}
  for difficulty in task.eval_difficulties:
    results[task.difficulty_label(difficulty)] = evaluate(params, difficulty)
  return results


def format_report(task: Task, results: dict) -> str:
  has_reference = 'reference_cost' in next(iter(results.values()))
  header = f'{task.difficulty_name:>16} | cost (bits/seq) | bit errors/seq'
  if has_reference:
    header += ' | optimal cost'
  lines = [header, '-' * len(header)]
  for name, values in results.items():
    label = 'train mix' if name == 'train' else name
    line = f'{label:>16} | {values["cost"]:15.3f} | {values["bit_errors"]:14.3f}'
    if has_reference:
      line += f' | {values["reference_cost"]:12.3f}'
    lines.append(line)
  return '\n'.join(lines)


def run(config: ExperimentConfig, task: Task, eval_only: bool = False,
        checkpoint: str = 'latest') -> dict:
  """Trains (resuming from the workdir's latest checkpoint) and evaluates; returns the report.

  Writes into `config.workdir`: checkpoints/ (the latest few, for resuming), best/ (the
  state of the evaluation with the lowest cost so far), metrics.jsonl, config.json,
  report.json and, with `config.plots`, the learning curve and memory/weighting figures
  as PNG. A training run holds the workdir for itself: a second one started on it raises
  `WorkdirBusyError` (an `eval_only` run, which writes no checkpoint, does not take it).
  `checkpoint='best'` evaluates best/ instead of the latest checkpoint; only with
  `eval_only`, since training resumes from the latest.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {", ".join(CHECKPOINTS)}; got '
                     f'{checkpoint!r}.')
  if checkpoint == 'best' and not eval_only:
    raise ValueError('checkpoint=best (--checkpoint=best) needs eval_only (--eval_only): '
                     'training always resumes from the latest checkpoint.')
  workdir = os.path.abspath(config.workdir)
  os.makedirs(workdir, exist_ok=True)
  with contextlib.nullcontext() if eval_only else _workdir_lock(workdir):
    return _run(config, task, eval_only, checkpoint, workdir)


def _run(config: ExperimentConfig, task: Task, eval_only: bool, checkpoint: str,
         workdir: str) -> dict:
  keys = Keys(config.seed)
  model = build_model(config, task)
  optimizer = make_optimizer(config)
  state = create_train_state(model, optimizer, task, keys)
  if config.ema_decay:  # a copy: the training step donates every buffer of its state
    state['ema_params'] = jax.tree.map(jnp.copy, state['params'])
  mesh = make_mesh(config.batch_size) if config.data_parallel else None
  if mesh is not None:
    state = replicate(state, mesh)
  if checkpoint == 'best' and not os.path.isdir(os.path.join(workdir, 'best')):
    raise FileNotFoundError(
        f'--checkpoint=best needs {os.path.join(workdir, "best")}, which training writes '
        'at every evaluation that improves on the best so far; this run has none.')
  checkpointer = checkpointing.Checkpointer(workdir)
  # An eval_only run of the latest checkpoint leaves best/ alone (and does not create it).
  best = None if checkpoint == 'latest' and eval_only else \
      checkpointing.BestCheckpointer(workdir)
  try:
    # Only a checkpoint binds the workdir to a model: a run that died before its first
    # save can be restarted with other sizes.
    _check_config(workdir, config, task, resuming=checkpointer.latest_step() is not None)
    source = best if checkpoint == 'best' else checkpointer
    if source.latest_step() is not None:
      state = _restore(source, state, config.ema_decay)
      print(f'Resumed from the checkpoint at step {int(state["step"])} in '
            f'{source.directory}.', flush=True)
    elif eval_only:
      raise FileNotFoundError(
          f'--eval_only needs a checkpoint, and {source.directory} has none.')
    evaluate = make_evaluator(model, task, keys, config.eval_batch_size)
    wall_start = time.time()
    converged_at = _converged_at(_MetricsLog.read(workdir), int(state['step']))
    if not eval_only:
      state, converged_at = _train(config, task, model, optimizer, keys, state,
                                   checkpointer, best, evaluate, mesh, converged_at)
    report = _final_report(config, task, model, state, evaluate, converged_at,
                           time.time() - wall_start, workdir, eval_only, checkpoint, best)
  finally:
    checkpointer.close()
    if best is not None:
      best.close()
  return report


def restore_evaluated_params(config: ExperimentConfig, task: Task,
                             checkpoint: str = 'latest') -> tuple[nn.Module, Any, int]:
  """The model, the parameters a run evaluates (the average where it keeps one) and the
  step, from the latest checkpoint in `config.workdir` or, with checkpoint='best', from
  best/: for analyses of a trained model outside the runner."""
  model = build_model(config, task)
  state = create_train_state(model, make_optimizer(config), task, Keys(config.seed))
  source = checkpointing.open_saved(config.workdir, checkpoint)
  try:
    state = _restore(source, state, config.ema_decay)
  finally:
    source.close()
  return model, evaluated_params(state), int(state['step'])


def _restore(checkpointer: checkpointing.Checkpointer, state: TrainState,
             ema_decay: float) -> TrainState:
  """The latest checkpoint, whether or not it was saved with a moving average.

  A run saved without an average that resumes with one starts the average from the
  restored parameters; a run saved with one that resumes without it drops it.
  """
  like = {name: value for name, value in state.items() if name != 'ema_params'}
  if 'ema_params' in checkpointer.saved_keys():
    like['ema_params'] = state['params']
  restored = checkpointer.restore(like)
  if not ema_decay:
    restored.pop('ema_params', None)
  elif 'ema_params' not in restored:
    restored['ema_params'] = jax.tree.map(jnp.copy, restored['params'])
  return restored


def _converged_at(records: list[dict], up_to_step: int) -> int | None:
  """Sequences seen at the first logged evaluation below CONVERGED_BIT_ERRORS."""
  return next((r['sequences'] for r in records
               if r.get('kind') == 'eval' and r['step'] <= up_to_step
               and r['train']['bit_errors'] < CONVERGED_BIT_ERRORS), None)


def _train(config, task, model, optimizer, keys, state, checkpointer, best, evaluate,
           mesh, converged_at):
  workdir = os.path.abspath(config.workdir)
  start_step = int(state['step'])
  log = _MetricsLog(workdir, start_step)
  train_step = make_train_step(model, optimizer, task, config.batch_size, keys.data, mesh,
                               config.micro_batch_size, config.entropy_penalty,
                               config.skip_grad_norm, config.ema_decay)
  progress = _Progress(config.train_steps)
  pending, window_start = [], time.time()
  if start_step >= config.train_steps:
    return state, converged_at

  def flush(step):
    """Fetches the pending metrics; raises if any loss is not finite."""
    nonlocal pending, window_start
    if not pending:
      return
    values = jax.device_get(pending)
    first_step = step - len(values) + 1
    for offset, record in enumerate(values):
      if not math.isfinite(float(record['cost'])):
        raise NonFiniteLossError(
            f'the training loss became {float(record["cost"])} at step '
            f'{first_step + offset}. The last good checkpoint (step '
            f'{checkpointer.latest_step()}) is kept in {checkpointer.directory}; lower '
            '--learning_rate or --clip, or change --seed, and rerun.')
    elapsed = time.time() - window_start
    means = {k: sum(float(r[k]) for r in values) / len(values) for k in values[0]}
    log.write(dict(kind='train', step=step, sequences=step * config.batch_size,
                   sequences_per_second=len(values) * config.batch_size / elapsed,
                   **means))
    progress.update(step, len(values) * config.batch_size / elapsed, means['cost'],
                    means['bit_errors'])
    pending, window_start = [], time.time()

  step = start_step
  try:
    while step < config.train_steps:
      state, step_metrics = train_step(state)
      step += 1
      pending.append(step_metrics)
      last = step == config.train_steps
      boundary = lambda every: step % every == 0 or last
      if boundary(config.log_every) or boundary(config.checkpoint_every) or boundary(
          config.eval_every):
        flush(step)
      if boundary(config.checkpoint_every):
        checkpointer.save(step, state)
      if boundary(config.eval_every):
        eval_start = time.time()
        train_eval = evaluate(evaluated_params(state), None)
        record = dict(kind='eval', step=step, sequences=step * config.batch_size,
                      train=train_eval)
        if 'ema_params' in state:
          record['unaveraged'] = evaluate(state['params'], None)
        log.write(record)
        best.save(step, state, train_eval['cost'])
        if converged_at is None and train_eval['bit_errors'] < CONVERGED_BIT_ERRORS:
          converged_at = step * config.batch_size
        window_start += time.time() - eval_start  # evaluations don't count as training
        if 0 < config.target_bit_errors and train_eval['bit_errors'] < \
            config.target_bit_errors:
          checkpointer.save(step, state)
          progress.newline()
          print(f'Reached {train_eval["bit_errors"]:.3f} bit errors per sequence '
                f'(target {config.target_bit_errors}) at step {step}; stopping.',
                flush=True)
          break
  except KeyboardInterrupt:
    progress.newline()
    if any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state)):
      # Interrupted while a step was being dispatched: the step had already taken the
      # donated state, so there is nothing newer than the last checkpoint to save.
      print('Interrupted during a training step: kept the checkpoint at step '
            f'{checkpointer.latest_step()}; rerun the same command to resume.', flush=True)
      raise
    # Keep what was learned: save the current state if its losses were all finite.
    flush(step)
    step = int(state['step'])  # the step the state has reached, whatever the loop counted
    checkpointer.save(step, state)
    print(f'Interrupted: saved the checkpoint at step {step}; rerun the same command '
          'to resume.', flush=True)
    raise
  progress.newline()
  return state, converged_at


def _final_report(config, task, model, state, evaluate, converged_at, wall_seconds,
                  workdir, eval_only, checkpoint, best):
  step = int(state['step'])
  results = evaluate_all(evaluate, evaluated_params(state), task)
  report = dict(task=task.name, model=config.model, seed=config.seed, step=step,
                sequences=step * config.batch_size,
                converged_at_sequences=converged_at, wall_seconds=wall_seconds,
                eval_only=eval_only, checkpoint=checkpoint, results=results)
  if 'ema_params' in state:
    report['unaveraged_results'] = evaluate_all(evaluate, state['params'], task)
  if best is not None and best.latest_step() is not None:
    report['best'] = dict(step=best.latest_step(), cost=best.best_cost())
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  which = 'the best evaluation\'s checkpoint' if checkpoint == 'best' else 'step'
  print(f'\n{task.name}, {config.model}, {which} {step} ({step * config.batch_size} '
        f'sequences), evaluated on {config.eval_batch_size} sequences per row:')
  print(format_report(task, results))
  if 'ema_params' in state:
    print(f'Averaged parameters (ema_decay={config.ema_decay}); the parameters '
          'themselves:')
    print(format_report(task, report['unaveraged_results']))
  if converged_at is not None:
    print(f'Converged (< {CONVERGED_BIT_ERRORS} bit errors per sequence) after '
          f'{converged_at} sequences.')
  if 'best' in report and report['best']['step'] != step:
    print(f'The best evaluation was at step {report["best"]["step"]} (cost '
          f'{report["best"]["cost"]:.3f} on the training difficulties); --eval_only '
          '--checkpoint=best evaluates its checkpoint.')
  if config.plots:
    paths = plots.write_all(workdir, task, model, evaluated_params(state),
                            keys=Keys(config.seed))
    print('Figures: ' + ', '.join(paths))
  print(f'Report: {os.path.join(workdir, "report.json")}', flush=True)
  return report
