"""The training state, the run's PRNG keys, and the jitted training step.

The step is jitted once on fixed shapes (tasks pad and mask), draws its batch on the
device from `fold_in(data_key, step)` and donates the old state. Because the batch (and,
for memory_init='random', the starting memory) depends only on the seed and the step, a
resumed run sees exactly the data an uninterrupted one would have.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ntm_jax.tasks.base import Task
from ntm_jax.training import metrics as metrics_lib

# A step's random starting memories (memory_init='random') come from
# fold_in(step's data key, MEMORY_STREAM): like its batch, a function of seed and step only.
MEMORY_STREAM = 7


class TrainState(NamedTuple):
  """What a training step reads and writes, and what a checkpoint holds.

  Attributes:
    step: int32 scalar, the steps taken.
    params: the model's variables.
    opt_state: the optimiser's state.
    ema_params: with an `ema_decay`, the moving average of `params`; else None.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None

  @property
  def evaluated_params(self) -> Any:
    """The parameters a run evaluates, reports and ships: the average where it keeps one."""
    return self.params if self.ema_params is None else self.ema_params

  def to_checkpoint(self) -> dict:
    """The checkpoint's tree: a dict of the fields that are set."""
    return {name: value for name, value in self._asdict().items() if value is not None}

  @classmethod
  def from_checkpoint(cls, tree: dict) -> 'TrainState':
    return cls(**tree)


class Keys:
  """The run's PRNG keys, all derived from the one seed."""

  def __init__(self, seed: int):
    base = jax.random.key(seed)
    self.params = jax.random.fold_in(base, 0)
    self.data = jax.random.fold_in(base, 1)
    self.eval = jax.random.fold_in(base, 2)
    self.figures = jax.random.fold_in(base, 3)
    self.check = jax.random.fold_in(base, 4)

  def restart_params(self, step: int) -> jax.Array:
    """The parameters' key of an attempt that restarts at `step` (>= 1)."""
    return jax.random.fold_in(self.params, step)

  def eval_batch(self, difficulty) -> jax.Array:
    """A fixed evaluation set per difficulty (None: the training distribution)."""
    return _per_difficulty(self.eval, difficulty)

  def check_batch(self, difficulty) -> jax.Array:
    """A fixed set per difficulty for decisions during training (the generalisation
    check), apart from the reported evaluation sets so that those stay unbiased."""
    return _per_difficulty(self.check, difficulty)


def _per_difficulty(key: jax.Array, difficulty) -> jax.Array:
  if difficulty is None:
    return jax.random.fold_in(key, 0)
  for part in difficulty if isinstance(difficulty, tuple) else (difficulty,):
    key = jax.random.fold_in(key, 1 + part)
  return key


def create_train_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    keys: Keys,
    ema: bool = False,
) -> TrainState:
  """The state before the first step; with `ema`, the average starts at the parameters."""
  return initializer(model, optimizer, task, ema)(keys, 0)


def initializer(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    ema: bool = False,
) -> Callable[[Keys, int], TrainState]:
  """(keys, step) -> the state of an attempt starting at `step`, compiled once.

  Step 0 is the run's start (`create_train_state`); a later step is a restart
  (ExperimentConfig.restart_after): fresh parameters from `keys.restart_params(step)`, a
  fresh optimiser state (its schedule starting again), the step count kept.
  """
  init = jax.jit(_initial_state(model, optimizer, task, ema))

  def initialize(keys: Keys, step: int) -> TrainState:
    state = init(keys.restart_params(step) if step else keys.params, keys.data)
    return state._replace(step=jnp.array(step, jnp.int32)) if step else state

  return initialize


def create_population_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    seeds,
    ema: bool = False,
) -> TrainState:
  """The states of the runs with these seeds, stacked along a leading member axis.

  Member k's state is `create_train_state(..., Keys(seeds[k]))`, by construction: the
  same compiled function, called once per member. (A vmapped initialisation gives the
  same values, but its batched orthogonal initialisation has hung XLA's CPU thread pool:
  BUILD_NOTES.md, "Open problems".)
  """
  init = initializer(model, optimizer, task, ema)
  states = [init(keys, 0) for keys in map(Keys, seeds)]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _initial_state(model, optimizer, task, ema) -> Callable:
  """(params key, data key) -> the state before the first step; jitted by the callers
  (eager initialisation takes seconds, op by op)."""

  def initial_state(params_key, data_key):
    sample = task.sample_train(data_key, 1)
    params = model.init(params_key, sample.inputs)
    # A copy: the training step donates every buffer of its state.
    ema_params = jax.tree.map(jnp.copy, params) if ema else None
    return TrainState(
        step=jnp.array(0, jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=ema_params,
    )

  return initial_state


def make_mesh(batch_size: int) -> jax.sharding.Mesh:
  """A mesh over all devices along the batch axis, for data-parallel training."""
  num_devices = jax.device_count()
  if batch_size % num_devices:
    raise ValueError(
        f'batch_size={batch_size} must be divisible by the number of '
        f'devices ({num_devices}) for data-parallel training.'
    )
  # An Auto axis: XLA's sharding propagation partitions the step from the batch's sharding.
  return jax.make_mesh(
      (num_devices,), ('batch',), axis_types=(jax.sharding.AxisType.Auto,)
  )


def replicate(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  """The state on every device of `mesh`, as the data-parallel step expects it."""
  return jax.device_put(
      state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    batch_size: int,
    data_key: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    micro_batch_size: int = 0,
    entropy_penalty: float = 0.0,
    skip_grad_norm: float = 0.0,
    ema_decay: float = 0.0,
) -> Callable:
  """A jitted (state) -> (state, metrics) training step that donates its input state.

  It is `step_function`'s step with the run's data key; see there.
  """
  step = step_function(
      model,
      optimizer,
      task,
      batch_size,
      mesh,
      micro_batch_size,
      entropy_penalty,
      skip_grad_norm,
      ema_decay,
  )
  train_step = lambda state: step(state, data_key)  # noqa: E731
  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(train_step, donate_argnums=0, out_shardings=replicated)


def step_function(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
    micro_batch_size: int = 0,
    entropy_penalty: float = 0.0,
    skip_grad_norm: float = 0.0,
    ema_decay: float = 0.0,
) -> Callable:
  """The (state, data key) -> (state, metrics) training step, not jitted.

  The step draws its batch from fold_in(data key, step), so that it is a function of the
  run's seed and the step only; a population maps it over its members' states and keys.

  With a `mesh`, each device takes its slice of the batch (`shard_map` over the mesh's
  'batch' axis) and the gradients are summed over devices, so the result is that of one
  device at the same global batch. With a `micro_batch_size`, each device goes through its
  slice in micro-batches of that size (a `lax.scan` that sums their gradients): the same
  update, computed on smaller arrays, which a CPU runs faster (docs/history, "Speed").
  With an `entropy_penalty` (NTM only) the gradients are those of the cost plus that
  multiple of the weightings' entropy (ExperimentConfig.entropy_penalty); the metrics
  stay the paper's cost and bit errors. With a `skip_grad_norm` (the optimiser's guard,
  optim.skip_large_gradients), the metrics also say which steps it skipped. With an
  `ema_decay`, the state's `ema_params` follow the parameters by that moving average.
  """
  num_devices = 1 if mesh is None else mesh.size
  per_device = batch_size // num_devices
  micro = micro_batch_size or per_device
  if per_device % micro:
    raise ValueError(
        f'micro_batch_size={micro_batch_size} must divide the batch on each '
        f'device: batch_size={batch_size} over {num_devices} device(s).'
    )

  def sums(params, batch, memory_key):
    """Summed cost, bit errors and cost gradients over one micro-batch."""

    def objective(params):
      # With a penalty the NTM also returns the weightings it recorded at every step.
      logits, recorded = model.apply(
          params,
          batch.inputs,
          rngs={'memory': memory_key},
          mutable=['intermediates'] if entropy_penalty else [],
      )
      cost = jnp.sum(metrics_lib.cost_per_sequence(logits, batch))
      if not entropy_penalty:
        return cost, (cost, logits)
      entropy = jnp.sum(
          model.recorded_weighting_entropy(recorded['intermediates'], batch.mask)
      )
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
          lambda x: x.reshape((num_micro, micro) + x.shape[1:]), batch
      )
      zeros = jax.tree.map(
          jnp.zeros_like, jax.eval_shape(sums, params, batch, memory_key)
      )
      totals, _ = jax.lax.scan(
          accumulate, zeros, (micro_batches, jax.random.split(memory_key, num_micro))
      )
    else:
      totals = sums(params, batch, memory_key)
    return totals if mesh is None else jax.lax.psum(totals, 'batch')

  if mesh is not None:
    P = jax.sharding.PartitionSpec  # noqa: N806 - the usual short name
    # check_vma=False: the models' scans start from carries made of (replicated)
    # parameters and take per-device inputs, which the varying-axes check rejects.
    device_sums = jax.shard_map(
        device_sums,
        mesh=mesh,
        in_specs=(P(), P('batch'), P()),
        out_specs=P(),
        check_vma=False,
    )

  def train_step(state, data_key):
    step_key = jax.random.fold_in(data_key, state.step)
    batch = task.sample_train(step_key, batch_size)
    # The step's random starting memories (memory_init='random'; unused otherwise).
    memory_key = jax.random.fold_in(step_key, MEMORY_STREAM)
    cost, bit_errors, grads = device_sums(state.params, batch, memory_key)
    grads = jax.tree.map(lambda g: g / batch_size, grads)  # of the mean cost
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    metrics = dict(
        cost=cost / batch_size, bit_errors=bit_errors / batch_size, grad_norm=grad_norm
    )
    if skip_grad_norm:  # the fraction of steps the optimiser skipped (optim.py)
      metrics['skipped'] = jnp.logical_not(grad_norm <= skip_grad_norm).astype(
          jnp.float32
      )
    ema_params = None
    if ema_decay:
      ema_params = optax.incremental_update(params, state.ema_params, 1 - ema_decay)
    return TrainState(state.step + 1, params, opt_state, ema_params), metrics

  return train_step


def repeated_steps(train_step: Callable, max_steps: int) -> Callable:
  """A jitted (state, n) -> (state after n steps, metrics) that runs the jitted
  `train_step` n times (1 <= n <= max_steps, a traced count: one compilation serves
  every n) and donates its input state. Each metric gets a leading axis of max_steps,
  whose first n entries are the steps' own.

  Each call costs a dispatch (argument checks and a launch on every device of the
  state) that a loop waiting for each call cannot overlap with the previous one; on
  several CPU devices that is about a quarter of a copy population's step
  (BUILD_NOTES.md, "Several devices on a CPU"). The loop body is the step itself, so n
  steps here and n calls of `train_step` give the same states.
  """

  def run(state, n):
    _, metric_shapes = jax.eval_shape(train_step, state)
    buffers = jax.tree.map(
        lambda s: jnp.zeros((max_steps,) + s.shape, s.dtype), metric_shapes
    )

    def one_step(index, carry):
      state, buffers = carry
      state, metrics = train_step(state)
      return state, jax.tree.map(
          lambda buffer, value: jax.lax.dynamic_update_index_in_dim(
              buffer, value, index, 0
          ),
          buffers,
          metrics,
      )

    return jax.lax.fori_loop(0, n, one_step, (state, buffers))

  return jax.jit(run, donate_argnums=0)
