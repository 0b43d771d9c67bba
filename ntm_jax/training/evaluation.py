"""Evaluation on a run's fixed evaluation sets, and when a run counts as converged."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task
from ntm_jax.training import metrics as metrics_lib
from ntm_jax.training.train_state import Keys

# The first evaluation with fewer bit errors per sequence than this counts as converged.
CONVERGED_BIT_ERRORS = 0.1
# An attempt with an evaluation below this is learning the task, not on a plateau, and
# is never restarted (ExperimentConfig.restart_after): plateaus sit well above it (copy
# 20-36, associative recall 3-5 per sequence) and converging attempts pass it on their
# way down, sometimes just before restart_after steps.
LEARNING_BIT_ERRORS = 1.0
# With a reference predictor (N-grams' optimal estimator) bit errors stay high however
# well a model predicts, so an attempt is learning within this fraction above the
# reference's cost (a fraction, so that it holds at any sequence length): at length 200
# attempts on the N-grams plateau are 22-25% (29-32 bits) above it at 24,000 sequences,
# learning ones 3-11% above by then; 15% is 20 bits.
LEARNING_REFERENCE_EXCESS = 0.15
# The generalisation check (ExperimentConfig.stop_when_generalising) passes below this
# many bit errors per sequence on CHECK_SEQUENCES of the hardest difficulty: not one
# sequence wholly wrong among them. A copy model that fails length 120 gets rare
# sequences wholly wrong (its read head slips: about 480 bit errors each), the same
# sequences at every checkpoint, a median 1 in 1,000: 256 sequences often miss that,
# and one slip among 2,048 is already 0.23 per sequence.
GENERALISING_BIT_ERRORS = 0.1
CHECK_SEQUENCES = 2048
# A run ends worse than its best evaluation when its final cost on the training mix is
# above the best by more than this many bits or this fraction of it, whichever is
# larger: a converged copy model's cost wanders between 0.001 and 0.003 bits from one
# evaluation to the next, while a spike adds bits (N-grams: 0.13 bits at 130).
WORSE_THAN_BEST_BITS = 0.01
WORSE_THAN_BEST_FRACTION = 0.001


def ended_worse(final_cost: float, best_cost: float) -> bool:
  """Whether a final cost is worse than the best evaluation's beyond noise."""
  return final_cost > best_cost + max(
      WORSE_THAN_BEST_BITS, WORSE_THAN_BEST_FRACTION * best_cost
  )


def eval_set(
    task: Task,
    keys: Keys,
    difficulty,
    batch_size: int,
    check: bool = False,
    difficulty_batch_size: int = 0,
) -> Batch:
  """The run's fixed evaluation sequences for a difficulty (None: the training mix);
  with `check`, its check sequences instead (Keys.check_batch). `batch_size` of them,
  or `difficulty_batch_size` of a generalisation difficulty where that is set."""
  key = keys.check_batch(difficulty) if check else keys.eval_batch(difficulty)
  if difficulty is None:
    return task.sample_train(key, batch_size)
  return task.sample_eval(key, difficulty_batch_size or batch_size, difficulty)


def make_evaluator(
    model: nn.Module,
    task: Task,
    keys: Keys,
    batch_size: int,
    check: bool = False,
    difficulty_batch_size: int = 0,
) -> Callable[[Any, Any], dict[str, float]]:
  """(params, difficulty) -> mean cost and bit errors per sequence on a fixed eval set
  (with `check`, on the check set: `eval_set`) of `batch_size` sequences, or of
  `difficulty_batch_size` for a generalisation difficulty where that is set.

  For tasks with a reference predictor (N-grams' optimal estimator) the result also has
  its mean cost, `reference_cost`, on the same sequences.
  """

  evaluate_batch = jax.jit(batch_evaluation(model, task))

  def evaluate(params, difficulty):
    batch = eval_set(task, keys, difficulty, batch_size, check, difficulty_batch_size)
    return {name: float(value) for name, value in evaluate_batch(params, batch).items()}

  return evaluate


def batch_evaluation(model: nn.Module, task: Task) -> Callable[[Any, Batch], dict]:
  """(params, batch) -> mean cost and bit errors (and the reference predictor's cost,
  where the task has one), not jitted: single runs jit it, populations vmap it too."""

  def evaluate_batch(params, batch):
    results = metrics_lib.summarize(model.apply(params, batch.inputs), batch)
    reference = task.reference_cost(batch)
    if reference is not None:
      results['reference_cost'] = jnp.mean(reference)
    return results

  return evaluate_batch


def evaluate_all(evaluate: Callable, params, task: Task) -> dict:
  """Training distribution and every generalisation difficulty of the task."""
  results = {'train': evaluate(params, None)}
  for difficulty in task.eval_difficulties:
    results[task.difficulty_label(difficulty)] = evaluate(params, difficulty)
  return results


def converged_at(
    records: list[dict], up_to_step: int, member: int | None = None
) -> int | None:
  """Sequences seen (from the run's start) at the current attempt's first logged
  evaluation below CONVERGED_BIT_ERRORS (of the population member with that index, if
  given): an attempt discarded by a restart does not count, even if it converged."""
  restarts = restarts_in(records, up_to_step, member)
  start = restarts[-1]['step'] if restarts else 0
  return next(
      (
          r['sequences']
          for r in records
          if r.get('kind') == 'eval'
          and start < r['step'] <= up_to_step
          and r.get('member') == member
          and r['train']['bit_errors'] < CONVERGED_BIT_ERRORS
      ),
      None,
  )


def evaluations(records: list[dict], member: int | None = None) -> list[dict]:
  """The logged evaluations (of the population member with that index, if given); a
  failed member's records do not count."""
  return [
      r
      for r in records
      if r.get('kind') == 'eval' and r.get('member') == member and not r.get('failed')
  ]


def best_evaluation(records: list[dict], member: int | None = None) -> dict | None:
  """{'cost', 'step'} of the logged evaluation with the lowest cost on the training mix
  (`evaluations`), or None if there is none."""
  evals = [(r['train']['cost'], r['step']) for r in evaluations(records, member)]
  return dict(zip(('cost', 'step'), min(evals))) if evals else None


def restarts_in(
    records: list[dict], up_to_step: int, member: int | None = None
) -> list[dict]:
  """The logged restarts (ExperimentConfig.restart_after) up to a step, of the
  population member with that index if given."""
  return [
      r
      for r in records
      if r.get('kind') == 'restart'
      and r['step'] <= up_to_step
      and r.get('member') == member
  ]


def learning(train_eval: dict) -> bool:
  """Whether an evaluation on the training mix shows an attempt learning the task (off
  its plateau): below LEARNING_BIT_ERRORS, or within LEARNING_REFERENCE_EXCESS above
  the reference cost where the task has a reference predictor."""
  if 'reference_cost' in train_eval:
    return train_eval['cost'] < train_eval['reference_cost'] * (
        1 + LEARNING_REFERENCE_EXCESS
    )
  return train_eval['bit_errors'] < LEARNING_BIT_ERRORS


def not_learning(train_eval: dict) -> tuple[str, str]:
  """What an attempt that is not `learning` lacks, and where this evaluation is."""
  if 'reference_cost' in train_eval:
    excess = train_eval['cost'] / train_eval['reference_cost'] - 1
    return (
        f'no evaluation within {LEARNING_REFERENCE_EXCESS:.1%} above the reference '
        'cost',
        f'now {excess:.1%} above it on the training mix',
    )
  return (
      f'no evaluation below {LEARNING_BIT_ERRORS:g} bit errors per sequence',
      f'now {train_eval["bit_errors"]:.3f} on the training mix',
  )


def current_attempt(
    records: list[dict], up_to_step: int, member: int | None = None
) -> tuple[int, int | None]:
  """The step the current attempt started at (0, or its last restart) and the step of
  its last evaluation up to `up_to_step` that was `learning` (None: none yet)."""
  restarts = restarts_in(records, up_to_step, member)
  start = restarts[-1]['step'] if restarts else 0
  learned_at = max(
      (
          r['step']
          for r in records
          if r.get('kind') == 'eval'
          and start < r['step'] <= up_to_step
          and r.get('member') == member
          and learning(r['train'])
      ),
      default=None,
  )
  return start, learned_at


def generalisation_passed(
    records: list[dict], step: int, member: int | None = None
) -> dict | None:
  """The generalisation check the run (or the population member with that index)
  passed at `step`, its state's step, and so stopped at; None if it did not stop there
  (ExperimentConfig.stop_when_generalising: a run resumed without it trains on)."""
  return next(
      (
          r
          for r in records
          if r.get('kind') == 'generalisation_check'
          and r['step'] == step
          and r.get('member') == member
          and r['passed']
      ),
      None,
  )
