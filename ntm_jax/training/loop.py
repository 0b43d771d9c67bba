"""The shared experiment runner: trains any model on any task, resumes, reports.

`run` orchestrates the jobs of the modules beside it: the model (`factory`), the state
and the jitted step (`train_state`), evaluation (`evaluation`), the workdir's lock,
metrics log and config record (`workdir`), checkpoints (`checkpointing`) and what it
prints (`reporting`).
"""

import contextlib
import json
import math
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ntm_jax.tasks.base import Task
from ntm_jax.training import checkpointing
from ntm_jax.training import plots
from ntm_jax.training import workdir as workdir_lib
from ntm_jax.training.config import CHECKPOINTS
from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.evaluation import CONVERGED_BIT_ERRORS
from ntm_jax.training.evaluation import converged_at
from ntm_jax.training.evaluation import evaluate_all
from ntm_jax.training.evaluation import make_evaluator
from ntm_jax.training.factory import build_model
from ntm_jax.training.optim import make_optimizer
from ntm_jax.training.reporting import Progress
from ntm_jax.training.reporting import format_report
from ntm_jax.training.train_state import Keys
from ntm_jax.training.train_state import TrainState
from ntm_jax.training.train_state import create_train_state
from ntm_jax.training.train_state import make_mesh
from ntm_jax.training.train_state import make_train_step
from ntm_jax.training.train_state import replicate


class NonFiniteLossError(FloatingPointError):
  """The training loss stopped being finite; the last good checkpoint is kept."""


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
  with contextlib.nullcontext() if eval_only else workdir_lib.lock(workdir):
    return _run(config, task, eval_only, checkpoint, workdir)


def _run(config: ExperimentConfig, task: Task, eval_only: bool, checkpoint: str,
         workdir: str) -> dict:
  keys = Keys(config.seed)
  model = build_model(config, task)
  optimizer = make_optimizer(config)
  state = create_train_state(model, optimizer, task, keys, ema=bool(config.ema_decay))
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
    workdir_lib.record_config(workdir, config, task,
                              resuming=checkpointer.latest_step() is not None)
    source = best if checkpoint == 'best' else checkpointer
    if source.latest_step() is not None:
      state = _restore(source, state, config.ema_decay)
      print(f'Resumed from the checkpoint at step {int(state.step)} in '
            f'{source.directory}.', flush=True)
    elif eval_only:
      raise FileNotFoundError(
          f'--eval_only needs a checkpoint, and {source.directory} has none.')
    evaluate = make_evaluator(model, task, keys, config.eval_batch_size)
    wall_start = time.time()
    converged = converged_at(workdir_lib.MetricsLog.read(workdir), int(state.step))
    if not eval_only:
      state, converged = _train(config, task, model, optimizer, keys, state,
                                checkpointer, best, evaluate, mesh, converged)
    report = _final_report(config, task, model, state, evaluate, converged,
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
  return model, state.evaluated_params, int(state.step)


def _restore(checkpointer: checkpointing.Checkpointer, state: TrainState,
             ema_decay: float) -> TrainState:
  """The latest checkpoint, whether or not it was saved with a moving average.

  A run saved without an average that resumes with one starts the average from the
  restored parameters; a run saved with one that resumes without it drops it.
  """
  like = state._replace(ema_params=None).to_checkpoint()
  if 'ema_params' in checkpointer.saved_keys():
    like['ema_params'] = state.params
  restored = TrainState.from_checkpoint(checkpointer.restore(like))
  if not ema_decay:
    return restored._replace(ema_params=None)
  if restored.ema_params is None:
    return restored._replace(ema_params=jax.tree.map(jnp.copy, restored.params))
  return restored


def _train(config: ExperimentConfig, task: Task, model: nn.Module,
           optimizer: optax.GradientTransformation, keys: Keys, state: TrainState,
           checkpointer: checkpointing.Checkpointer,
           best: checkpointing.BestCheckpointer, evaluate: Callable,
           mesh: jax.sharding.Mesh | None,
           converged: int | None) -> tuple[TrainState, int | None]:
  """Trains from `state` to `config.train_steps`, logging, evaluating and saving."""
  workdir = os.path.abspath(config.workdir)
  start_step = int(state.step)
  log = workdir_lib.MetricsLog(workdir, start_step)
  train_step = make_train_step(model, optimizer, task, config.batch_size, keys.data, mesh,
                               config.micro_batch_size, config.entropy_penalty,
                               config.skip_grad_norm, config.ema_decay)
  progress = Progress(config.train_steps)
  pending, window_start = [], time.time()
  if start_step >= config.train_steps:
    return state, converged

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
        checkpointer.save(step, state.to_checkpoint())
      if boundary(config.eval_every):
        eval_start = time.time()
        train_eval = evaluate(state.evaluated_params, None)
        record = dict(kind='eval', step=step, sequences=step * config.batch_size,
                      train=train_eval)
        if state.ema_params is not None:
          record['unaveraged'] = evaluate(state.params, None)
        log.write(record)
        best.save(step, state.to_checkpoint(), train_eval['cost'])
        if converged is None and train_eval['bit_errors'] < CONVERGED_BIT_ERRORS:
          converged = step * config.batch_size
        window_start += time.time() - eval_start  # evaluations don't count as training
        if 0 < config.target_bit_errors and train_eval['bit_errors'] < \
            config.target_bit_errors:
          checkpointer.save(step, state.to_checkpoint())
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
    step = int(state.step)  # the step the state has reached, whatever the loop counted
    checkpointer.save(step, state.to_checkpoint())
    print(f'Interrupted: saved the checkpoint at step {step}; rerun the same command '
          'to resume.', flush=True)
    raise
  progress.newline()
  return state, converged


def _final_report(config: ExperimentConfig, task: Task, model: nn.Module, state: TrainState,
                  evaluate: Callable, converged: int | None, wall_seconds: float,
                  workdir: str, eval_only: bool, checkpoint: str,
                  best: checkpointing.BestCheckpointer | None) -> dict:
  """Evaluates every difficulty, writes report.json and the figures, prints the tables."""
  step = int(state.step)
  results = evaluate_all(evaluate, state.evaluated_params, task)
  report = dict(task=task.name, model=config.model, seed=config.seed, step=step,
                sequences=step * config.batch_size,
                converged_at_sequences=converged, wall_seconds=wall_seconds,
                eval_only=eval_only, checkpoint=checkpoint, results=results)
  if state.ema_params is not None:
    report['unaveraged_results'] = evaluate_all(evaluate, state.params, task)
  if best is not None and best.latest_step() is not None:
    report['best'] = dict(step=best.latest_step(), cost=best.best_cost())
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  which = 'the best evaluation\'s checkpoint' if checkpoint == 'best' else 'step'
  print(f'\n{task.name}, {config.model}, {which} {step} ({step * config.batch_size} '
        f'sequences), evaluated on {config.eval_batch_size} sequences per row:')
  print(format_report(task, results))
  if state.ema_params is not None:
    print(f'Averaged parameters (ema_decay={config.ema_decay}); the parameters '
          'themselves:')
    print(format_report(task, report['unaveraged_results']))
  if converged is not None:
    print(f'Converged (< {CONVERGED_BIT_ERRORS} bit errors per sequence) after '
          f'{converged} sequences.')
  if 'best' in report and report['best']['step'] != step:
    print(f'The best evaluation was at step {report["best"]["step"]} (cost '
          f'{report["best"]["cost"]:.3f} on the training difficulties); --eval_only '
          '--checkpoint=best evaluates its checkpoint.')
  if config.plots:
    paths = plots.write_all(workdir, task, model, state.evaluated_params,
                            keys=Keys(config.seed))
    print('Figures: ' + ', '.join(paths))
  print(f'Report: {os.path.join(workdir, "report.json")}', flush=True)
  return report
