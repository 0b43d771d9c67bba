"""A population: K independent runs of one recipe, advanced together by one jitted step.

The population is a leading member axis on every leaf of the training state. Member k is
the run of `seeds[k]`: its parameters, batches, random memories and evaluation sets come
from `Keys(seeds[k])` exactly as a single run's do, and its step is the single run's step
(`train_state.step_function`) mapped over the members with `jax.vmap`. So member k of a
population follows run `--seed=seeds[k]` up to float32 rounding (a batched matrix product
may sum in another order), and its data are bit for bit the same. Training can grow that
rounding over a long run (with Adam fastest), so a member and its single run may end
differently.

A member whose training loss stops being finite is frozen (its state is kept as it was
before that step) and marked failed; the others go on. A member that has stopped (it
passed its generalisation check, ExperimentConfig.stop_when_generalising) is frozen too,
its step count with it, as its single run ends there.

Checkpoints: one Orbax checkpoint holds the whole population (`Population.to_checkpoint`:
the stacked TrainState and the failed and stopped flags); best/ holds, per member, the
state of that member's best evaluation so far, with its cost and step (`BestMembers`).
"""

from collections.abc import Callable, Sequence
import math
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from ntm_jax.tasks.base import Task
from ntm_jax.training import checkpointing
from ntm_jax.training.evaluation import CONVERGED_BIT_ERRORS
from ntm_jax.training.evaluation import batch_evaluation
from ntm_jax.training.evaluation import eval_set
from ntm_jax.training.train_state import Keys
from ntm_jax.training.train_state import TrainState
from ntm_jax.training.train_state import step_function

MEMBER_AXIS = 'members'


def parse_seeds(text: str) -> tuple[int, ...]:
  """'0-9' or '3,7,11' (or a mix, '0-3,8') as a tuple of distinct seeds, in order.

  Raises ValueError naming what is allowed.
  """
  seeds = []
  try:
    for part in text.split(','):
      first, _, last = part.strip().partition('-')
      first, last = int(first), int(last or first)
      if last < first:
        raise ValueError
      seeds.extend(range(first, last + 1))
  except ValueError:
    raise ValueError(
        f'--seeds must be seeds like 0-9 or 3,7,11 (integers >= 0, ranges '
        f'low-high); got {text!r}.'
    ) from None
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'--seeds names a seed twice: {text!r}.')
  return tuple(seeds)


class Population(NamedTuple):
  """The training state of K runs, which of them have failed and which have stopped.

  Attributes:
    members: a TrainState whose every leaf has a leading axis of K members.
    failed: bool[K], the members whose training loss stopped being finite.
    stopped: bool[K], the members that have finished early (they passed their
      generalisation check); their state, step included, no longer changes.
  """

  members: TrainState
  failed: jax.Array
  stopped: jax.Array

  @classmethod
  def start(cls, members: TrainState) -> 'Population':
    """`members` as a population with none failed or stopped."""
    size = members.step.shape[0]
    return cls(members, jnp.zeros(size, bool), jnp.zeros(size, bool))

  @property
  def step(self) -> jax.Array:
    """The steps the population has taken: every member's but a stopped one's."""
    return jnp.max(self.members.step)

  @property
  def params(self) -> Any:
    return self.members.params

  @property
  def ema_params(self) -> Any:
    return self.members.ema_params

  @property
  def evaluated_params(self) -> Any:
    return self.members.evaluated_params

  def to_checkpoint(self) -> dict:
    return dict(
        members=self.members.to_checkpoint(), failed=self.failed, stopped=self.stopped
    )

  @classmethod
  def from_checkpoint(cls, tree: dict) -> 'Population':
    """A population from `to_checkpoint`'s tree (one saved before members could stop
    has no `stopped`: none had)."""
    stopped = tree.get('stopped')
    if stopped is None:
      stopped = jnp.zeros_like(tree['failed'])
    return cls(TrainState.from_checkpoint(tree['members']), tree['failed'], stopped)

  def member(self, index: int) -> TrainState:
    """Member `index`'s state, as its single run would hold it."""
    return jax.tree.map(lambda x: x[index], self.members)

  def with_stopped(self, stopped: Sequence[bool]) -> 'Population':
    """This population with these stopped flags, placed as the old ones are."""
    return self._replace(
        stopped=_placed(np.asarray(stopped, bool), self.stopped.sharding)
    )

  def replace_members(self, states: dict[int, TrainState]) -> 'Population':
    """This population with member i's state replaced by `states[i]` (a restart); the
    arrays keep their placement."""
    members = self.members
    for index, state in states.items():
      members = jax.tree.map(
          lambda stacked, new, index=index: stacked.at[index].set(new), members, state
      )
    members = jax.tree.map(
        lambda new, old: _placed(new, old.sharding), members, self.members
    )
    return self._replace(members=members)


def fetch(tree: Any) -> Any:
  """`tree`'s arrays as NumPy arrays on this host. In a multi-process run a member-split
  array spans every process's devices: all of them call this, and each gets the whole."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def make_population_mesh(size: int) -> jax.sharding.Mesh:
  """A mesh over all devices along the member axis: each device trains size/devices."""
  num_devices = jax.device_count()
  if size % num_devices:
    raise ValueError(
        f'--seeds or --population gives {size} members, which must be '
        f'divisible by the number of devices ({num_devices}) for '
        '--data_parallel.'
    )
  return jax.make_mesh(
      (num_devices,), (MEMBER_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def shard_members(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """`tree` (leaves with a leading member axis, the same in every process) split over
  `mesh`'s devices, those of other processes included."""
  if mesh is None:
    return tree
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(MEMBER_AXIS))
  return jax.tree.map(lambda x: _placed(x, sharding), tree)


def _placed(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """`x`, the same in every process, as an array with `sharding`: each process places
  the parts its own devices hold (jax.device_put takes only this process's devices)."""
  if getattr(x, 'sharding', None) == sharding:
    return x
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# On a CPU, members stepped this many at a time: from about 16 members all at once falls
# behind separate runs, likely as their states outgrow the caches (docs/BENCHMARKS.md).
CPU_MEMBERS_AT_ONCE = 4


def automatic_members_at_once(platform: str) -> int:
  """Members a device steps at once when not told: all of them (`vmap`, 0: the batched
  products an accelerator needs) except on a CPU, which steps CPU_MEMBERS_AT_ONCE at a
  time."""
  return CPU_MEMBERS_AT_ONCE if platform == 'cpu' else 0


def make_population_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    task: Task,
    batch_size: int,
    seeds: Sequence[int],
    mesh: jax.sharding.Mesh | None = None,
    members_at_once: int = 0,
    **step_options,
) -> Callable:
  """A jitted (population) -> (population, metrics) step that donates its input.

  Every member takes its single run's step (`step_function` with `step_options`, on its
  own data key); the metrics have a leading member axis. A member whose cost is not
  finite keeps its state from before the step and is marked failed; a stopped member
  keeps its state and step. With a `mesh` (over the member axis) each device steps its
  share of the members.

  `members_at_once`: k > 0 goes through a device's members k at a time (`lax.map`, which
  holds only k members' intermediates at once); 0 chooses (`automatic_members_at_once`).
  """
  platform = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform
  members_at_once = members_at_once or automatic_members_at_once(platform)
  step = step_function(model, optimizer, task, batch_size, **step_options)
  # On the host, a constant of the compiled step that shard_map splits: an array placed
  # on devices of several processes could not be one.
  key_data = np.stack([jax.random.key_data(Keys(seed).data) for seed in seeds])
  key_impl = jax.random.key_impl(Keys(seeds[0]).data)

  def advance(
      members: TrainState, failed: jax.Array, stopped: jax.Array, keys: jax.Array
  ):
    if members_at_once and members_at_once < keys.shape[0]:
      new, metrics = jax.lax.map(
          lambda args: step(*args), (members, keys), batch_size=members_at_once
      )
    else:
      new, metrics = jax.vmap(step)(members, keys)
    failed = failed | (~jnp.isfinite(metrics['cost']) & ~stopped)
    frozen = failed | stopped

    def keep_frozen(updated, old):
      return jnp.where(
          frozen.reshape(frozen.shape + (1,) * (updated.ndim - 1)), old, updated
      )

    new = jax.tree.map(keep_frozen, new, members)
    return (
        new._replace(step=jnp.where(stopped, members.step, members.step + 1)),
        failed,
        metrics,
    )

  if mesh is not None:
    # Each device advances its own members: no communication between devices.
    spec = jax.sharding.PartitionSpec(MEMBER_AXIS)
    advance = jax.shard_map(
        advance,
        mesh=mesh,
        in_specs=(spec, spec, spec, spec),
        out_specs=(spec, spec, spec),
        check_vma=False,
    )

  def population_step(population: Population):
    keys = jax.random.wrap_key_data(jnp.asarray(key_data), impl=key_impl)
    members, failed, metrics = advance(
        population.members, population.failed, population.stopped, keys
    )
    return Population(members, failed, population.stopped), metrics

  return jax.jit(population_step, donate_argnums=0)


def make_population_evaluator(
    model: nn.Module,
    task: Task,
    seeds: Sequence[int],
    batch_size: int,
    check: bool = False,
    difficulty_batch_size: int = 0,
) -> Callable[[Any, Any], list[dict]]:
  """(stacked params, difficulty) -> each member's results on its own run's eval set
  (with `check`, its check set), of as many sequences as `evaluation.make_evaluator`'s.

  Member k is evaluated on the sequences `evaluation.make_evaluator` gives run
  `seeds[k]`; the results are those of its single run up to float32 rounding.
  """
  keys = [Keys(seed) for seed in seeds]
  sets = {}

  evaluate_batch = jax.jit(jax.vmap(batch_evaluation(model, task)))

  def evaluate(params, difficulty) -> list[dict]:
    if difficulty not in sets:  # fixed sets: drawn once
      sets[difficulty] = jax.tree.map(
          lambda *xs: jnp.stack(xs),
          *[
              eval_set(task, k, difficulty, batch_size, check, difficulty_batch_size)
              for k in keys
          ],
      )
    results = fetch(evaluate_batch(params, sets[difficulty]))
    return [
        {name: float(values[i]) for name, values in results.items()}
        for i in range(len(seeds))
    ]

  return evaluate


class BestMembers(checkpointing.Checkpointer):
  """Each member's state at its best evaluation so far, in one checkpoint under best/.

  The checkpoint holds the members' best states (stacked, as in a Population), their
  costs (infinity for a member never evaluated) and steps. A resumed run restores it
  and goes on comparing against it. `latest_step` is the step of the newest save.
  """

  subdirectory = 'best'

  def __init__(self, workdir: str, like: Population):
    super().__init__(workdir)
    size = like.failed.shape[0]
    self.costs = np.full(size, math.inf)
    self.steps = np.full(size, -1)
    self.states = None  # until the first evaluation: a training step donates `like`
    if self.latest_step() is not None:
      saved = self.restore(self._tree(like.members, self.costs, self.steps))
      self.states = TrainState.from_checkpoint(saved['members'])
      self.costs, self.steps = np.asarray(saved['costs']), np.asarray(saved['steps'])

  def _options(self) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        create=True, preservation_policy=ocp.checkpoint_managers.LatestN(1)
    )

  @staticmethod
  def _tree(members: TrainState, costs, steps) -> dict:
    return dict(
        members=members.to_checkpoint(),
        costs=np.asarray(costs, np.float64),
        steps=np.asarray(steps, np.int64),
    )

  def update(self, step: int, population: Population, costs: Sequence[float]) -> bool:
    """Takes every member whose cost is below its best (and finite); saves if any did."""
    costs = np.asarray(costs, np.float64)
    improved = (costs < self.costs) & ~fetch(population.failed)
    if not improved.any():
      return False
    chosen = jnp.asarray(improved)

    def select(new, old):
      return jnp.where(chosen.reshape(chosen.shape + (1,) * (new.ndim - 1)), new, old)

    self.states = jax.tree.map(
        select,
        population.members,
        population.members if self.states is None else self.states,
    )
    self.costs = np.where(improved, costs, self.costs)
    self.steps = np.where(improved, step, self.steps)
    if step == self.latest_step():
      return True
    self._manager.save(
        step,
        args=ocp.args.StandardSave(self._tree(self.states, self.costs, self.steps)),
        force=True,
    )
    return True

  def population(self, failed: jax.Array) -> Population:
    """The members' best states as a population (for an evaluation of best/)."""
    if self.states is None:
      raise FileNotFoundError(f'{self.directory} holds no finished checkpoint.')
    return Population(self.states, failed, jnp.zeros_like(failed))


def judged_value(result: dict, judged_by: str = 'bit_errors') -> float:
  """One evaluated set's `judged_by` result (Task.judged_by); for the cost, of a task
  with a reference predictor (N-grams: the optimal estimator), the cost above the
  reference's on the same sequences. Each member is evaluated on its own seed's
  sequences, whose optimum differs between seeds by a bit or more, so raw costs would
  rank the sequences rather than the models."""
  if judged_by == 'cost' and 'reference_cost' in result:
    return result['cost'] - result['reference_cost']
  return result[judged_by]


def overall_score(report: dict, judged_by: str = 'bit_errors') -> tuple[float, ...]:
  """How a member report ranks (lowest first): whether it misses its training mix (1 if
  its final bit errors per sequence there are not below evaluation.CONVERGED_BIT_ERRORS,
  for a task judged by bit errors; else 0), then its `judged_by` result
  (`judged_value`), then its cost, each summed over its evaluated sets: the training mix
  and every generalisation difficulty. The sums name the member that generalises:
  members that fit the training mix equally well (copy: about 0.001 bits each) can
  differ by hundreds of bits at the longest lengths. Ranked by what the task is judged
  by: a copy member whose few errors at length 120 are confident can have a lower cost
  than one with five times as many doubtful ones. A member that ended inside a
  cost spike, or never converged, comes after every member that fits the training mix
  however it generalises: the sums over long sequences (repeat copy's 20 x 20: about
  1,000 bit errors) would otherwise outweigh a training mix it no longer fits."""
  results = report['results'].values()
  train_errors = report['results']['train']['bit_errors']
  misses = judged_by == 'bit_errors' and not train_errors < CONVERGED_BIT_ERRORS
  return (
      float(misses),
      float(sum(judged_value(result, judged_by) for result in results)),
      float(sum(result['cost'] for result in results)),
  )


def best_member(scores: Sequence, failed: Sequence[bool]) -> int | None:
  """The index of the member with the lowest score (a number, or a tuple compared in
  order) among those that have not failed and whose score is finite."""
  candidates = [
      (score, index)
      for index, (score, dead) in enumerate(zip(scores, failed))
      if not dead and all(map(math.isfinite, np.atleast_1d(score)))
  ]
  return min(candidates)[1] if candidates else None


def _stats(values: list[float]) -> dict | None:
  return (
      dict(
          median=float(np.median(values)),
          mean=float(np.mean(values)),
          worst=float(np.max(values)),
      )
      if values
      else None
  )


def _above_reference(result: dict) -> float:
  return judged_value(result, 'cost')


def summary(members: list[dict], labels: Sequence[str]) -> dict:
  """Over the members' reports: how many converged, the median sequences to converge,
  and the median, mean and worst bit errors and cost per evaluated difficulty (and the
  cost above the reference predictor's, for a task that has one)."""
  converged = [
      m['converged_at_sequences']
      for m in members
      if m['converged_at_sequences'] is not None and not m['failed']
  ]
  alive = [m for m in members if not m['failed']]
  result = dict(
      members=len(members),
      failed=sum(m['failed'] for m in members),
      converged=len(converged),
      restarted=sum(bool(m.get('restarts')) for m in members),
      stopped=sum('stopped_generalising' in m for m in members),
      median_sequences_to_converge=float(np.median(converged)) if converged else None,
      bit_errors={
          label: _stats([m['results'][label]['bit_errors'] for m in alive])
          for label in labels
      },
      cost={
          label: _stats([m['results'][label]['cost'] for m in alive]) for label in labels
      },
  )
  if members and 'reference_cost' in members[0]['results'][labels[0]]:
    result['above_reference'] = {
        label: _stats([_above_reference(m['results'][label]) for m in alive])
        for label in labels
    }
  return result


def _table_metric(task: Task, members: list[dict]) -> tuple[str, str, Callable]:
  """What the table shows, by what the task is judged by (Task.judged_by): its title,
  the summary's key and each result's value."""
  first = next(iter(members[0]['results'].values()))
  if task.judged_by == 'bit_errors':
    return ('bit errors per sequence', 'bit_errors', lambda r: r['bit_errors'])
  if 'reference_cost' in first:
    return (
        "cost per sequence above the optimal estimator's (bits)",
        'above_reference',
        _above_reference,
    )
  return ('cost per sequence (bits)', 'cost', lambda r: r['cost'])


def format_table(task: Task, members: list[dict], summary_: dict) -> str:
  """One row per member (sequences to converge, where it stopped if it did, and per
  evaluated difficulty what the task is judged by: bit errors, or the cost, above the
  optimal estimator's where the task has one) and the summary rows."""
  labels = list(members[0]['results'])
  names = ['train mix' if label == 'train' else label for label in labels]
  title, key, value = _table_metric(task, members)
  stops = any('stopped_generalising' in m for m in members)
  header = (
      f'{"seed":>6} | {"converged at":>12} | '
      + (f'{"stopped at":>10} | ' if stops else '')
      + ' | '.join(f'{name:>9}' for name in names)
  )
  lines = [f'{title} by {task.difficulty_name}:', header, '-' * len(header)]
  for m in members:
    at = (
        'failed'
        if m['failed']
        else (
            '-'
            if m['converged_at_sequences'] is None
            else str(m['converged_at_sequences'])
        )
    )
    if m.get('restarts'):  # sequences counted from the run's start, restarts included
      at = f'{"r" * len(m["restarts"])} {at}'
    stopped = (
        str(m['stopped_generalising']['step']) if 'stopped_generalising' in m else '-'
    )
    lines.append(
        f'{m["seed"]:>6} | {at:>12} | '
        + (f'{stopped:>10} | ' if stops else '')
        + ' | '.join(f'{value(m["results"][label]):9.3f}' for label in labels)
    )
  lines.append('-' * len(header))
  median = summary_['median_sequences_to_converge']
  converged = f'{summary_["converged"]}/{summary_["members"]}'
  for row in ('median', 'mean', 'worst'):
    at = {
        'median': '-' if median is None else f'{median:.0f}',
        'mean': converged,
        'worst': '',
    }[row]
    values = [summary_[key][label] for label in labels]
    stopped = {'mean': f'{summary_["stopped"]}/{summary_["members"]}'}.get(row, '')
    lines.append(
        f'{row:>6} | {at:>12} | '
        + (f'{stopped:>10} | ' if stops else '')
        + ' | '.join('        -' if v is None else f'{v[row]:9.3f}' for v in values)
    )
  lines.append(
      '(converged at: below 0.1 bit errors per sequence on the training mix; '
      'median row, the median over members that converged; '
      'mean row, how many converged; r: a restart from a fresh initialisation'
      + (
          '; stopped at: the step it stopped at, converged and generalising '
          '(stop_when_generalising), mean row, how many did)'
          if stops
          else ')'
      )
  )
  return '\n'.join(lines)


def member_directory(workdir: str, seed: int) -> str:
  """Where an evaluation of one member writes its report and figures."""
  return os.path.join(workdir, f'member_seed{seed}')
