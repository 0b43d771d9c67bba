"""The shared experiment runner: trains any model on any task, resumes, reports.

`run` orchestrates the jobs of the modules beside it: the model (`factory`), the state
and the jitted step (`train_state`, or `population` for several seeds at once),
evaluation (`evaluation`), the workdir's lock, metrics log and config record
(`workdir`), checkpoints (`checkpointing`) and what it prints (`reporting`).

One loop trains a single run and a population alike. It sees every run as a list of
members: a single run is one member without a member axis, and the evaluator returns
one result per member.
"""

from collections.abc import Callable
import contextlib
import itertools
import json
import math
import os
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from orbax.checkpoint import multihost as orbax_multihost

from ntm_jax.tasks.base import Task
from ntm_jax.training import checkpointing
from ntm_jax.training import plots
from ntm_jax.training import population as population_lib
from ntm_jax.training import resources
from ntm_jax.training import train_state as train_state_lib
from ntm_jax.training import workdir as workdir_lib
from ntm_jax.training.config import CHECKPOINTS
from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.evaluation import CHECK_SEQUENCES
from ntm_jax.training.evaluation import CONVERGED_BIT_ERRORS
from ntm_jax.training.evaluation import GENERALISING_BIT_ERRORS
from ntm_jax.training.evaluation import best_evaluation
from ntm_jax.training.evaluation import converged_at
from ntm_jax.training.evaluation import current_attempt
from ntm_jax.training.evaluation import ended_worse
from ntm_jax.training.evaluation import evaluate_all
from ntm_jax.training.evaluation import evaluations
from ntm_jax.training.evaluation import generalisation_passed
from ntm_jax.training.evaluation import learning
from ntm_jax.training.evaluation import make_evaluator
from ntm_jax.training.evaluation import not_learning
from ntm_jax.training.evaluation import restarts_in
from ntm_jax.training.factory import build_model
from ntm_jax.training.optim import make_optimizer
from ntm_jax.training.population import Population
from ntm_jax.training.reporting import Progress
from ntm_jax.training.reporting import format_report
from ntm_jax.training.train_state import Keys
from ntm_jax.training.train_state import TrainState
from ntm_jax.training.train_state import create_population_state
from ntm_jax.training.train_state import create_train_state
from ntm_jax.training.train_state import make_mesh
from ntm_jax.training.train_state import make_train_step
from ntm_jax.training.train_state import replicate


class NonFiniteLossError(FloatingPointError):
  """The training loss stopped being finite; the last good checkpoint is kept."""


# Set (e.g. by a SIGTERM handler) to stop training at the next step boundary as Ctrl-C
# does: saving the state, then raising KeyboardInterrupt. Unlike an exception raised by
# the handler itself, it never lands inside an Orbax save.
STOP_REQUESTED = threading.Event()

# Where the loop waits for each call (`_waits_for_each_step`), a call runs up to this
# many steps of one member per device, divided by the members each device steps: enough
# that the call's dispatch is a small part of it (a copy member's step takes about 1.5
# ms), few enough that a stop request waits well under a second.
STEPS_PER_CALL = 100


def run(
    config: ExperimentConfig,
    task: Task,
    eval_only: bool = False,
    checkpoint: str = 'latest',
    member: int | str | None = None,
) -> dict:
  """Trains (resuming from the workdir's latest checkpoint) and evaluates; returns the report.

  Writes into `config.workdir`: checkpoints/ (the latest few, for resuming), best/ (the
  state of the evaluation with the lowest cost so far; per member for a population),
  metrics.jsonl, config.json, report.json and, with `config.plots`, the learning curve
  and memory/weighting figures as PNG. A training run holds the workdir for itself: a
  second one started on it raises `WorkdirBusyError` (an `eval_only` run, which writes no
  checkpoint, does not take it). `checkpoint='best'` evaluates best/ instead of the
  latest checkpoint; only with `eval_only`, since training resumes from the latest.
  `member` (a population's seed, or 'best' for the member with the best evaluation),
  with `eval_only`, evaluates that member as its single run's workdir would be, into
  `<workdir>/member_seed<seed>/`.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(
        f'checkpoint must be one of {", ".join(CHECKPOINTS)}; got ' f'{checkpoint!r}.'
    )
  if checkpoint == 'best' and not eval_only:
    raise ValueError(
        'checkpoint=best (--checkpoint=best) needs eval_only (--eval_only): '
        'training always resumes from the latest checkpoint.'
    )
  if member is not None:
    if not (eval_only and config.seeds):
      raise ValueError(
          '--member evaluates one member of a population: it needs '
          "--eval_only and the population's own --seeds or --population."
      )
    if member != 'best' and member not in config.seeds:
      raise ValueError(
          f'--member must be best or one of the seeds '
          f'{",".join(map(str, config.seeds))}; got {member!r}.'
      )
  workdir = workdir_lib.prepare(config.workdir, eval_only)
  with contextlib.nullcontext() if eval_only else workdir_lib.lock(workdir):
    return _run(config, task, eval_only, checkpoint, workdir, member)


def _run(
    config: ExperimentConfig,
    task: Task,
    eval_only: bool,
    checkpoint: str,
    workdir: str,
    member: int | str | None,
) -> dict:
  model = build_model(config, task)
  resources.check_fits(config, task, model)  # before anything is allocated
  optimizer = make_optimizer(config.optimiser)
  ema = bool(config.ema_decay)
  if config.seeds:
    mesh = (
        population_lib.make_population_mesh(len(config.seeds))
        if config.data_parallel
        else None
    )
    state = Population.start(
        create_population_state(model, optimizer, task, config.seeds, ema)
    )
    state = population_lib.shard_members(state, mesh)
    evaluate = population_lib.make_population_evaluator(
        model,
        task,
        config.seeds,
        config.eval_batch_size,
        difficulty_batch_size=config.difficulty_batch_size,
    )
    check = (
        population_lib.make_population_evaluator(
            model, task, config.seeds, CHECK_SEQUENCES, check=True
        )
        if config.stop_when_generalising
        else None
    )
  else:
    mesh = make_mesh(config.batch_size) if config.data_parallel else None
    state = create_train_state(model, optimizer, task, Keys(config.seed), ema=ema)
    if mesh is not None:
      state = replicate(state, mesh)
    evaluate_one = make_evaluator(
        model,
        task,
        Keys(config.seed),
        config.eval_batch_size,
        difficulty_batch_size=config.difficulty_batch_size,
    )
    evaluate = lambda params, difficulty: [evaluate_one(params, difficulty)]  # noqa: E731
    check = None
    if config.stop_when_generalising:
      check_one = make_evaluator(
          model, task, Keys(config.seed), CHECK_SEQUENCES, check=True
      )
      check = lambda params, difficulty: [check_one(params, difficulty)]  # noqa: E731
  if checkpoint == 'best' and not os.path.isdir(os.path.join(workdir, 'best')):
    raise FileNotFoundError(
        f'--checkpoint=best needs {os.path.join(workdir, "best")}, which training writes '
        'at every evaluation that improves on the best so far; this run has none.'
    )
  checkpointer = checkpointing.Checkpointer(workdir)
  best = None
  try:
    # Only a checkpoint binds the workdir to a model: a run that died before its first
    # save can be restarted with other sizes.
    workdir_lib.record_config(
        workdir, config, task, resuming=checkpointer.latest_step() is not None
    )
    if checkpointer.latest_step() is not None:
      state = _restore(checkpointer, state, config.ema_decay)
    # An eval_only run of the latest checkpoint leaves best/ alone (and does not create it).
    if not (checkpoint == 'latest' and eval_only):
      best = (
          population_lib.BestMembers(workdir, state)
          if config.seeds
          else checkpointing.BestCheckpointer(workdir)
      )
    if checkpoint == 'best':
      state = _best_state(best, state, config.ema_decay)
    source = best if checkpoint == 'best' else checkpointer
    if source.latest_step() is not None:
      print(
          f'Resumed from the checkpoint at step {source.latest_step()} in '
          f'{source.directory}.',
          flush=True,
      )
    elif eval_only:
      raise FileNotFoundError(
          f'--eval_only needs a checkpoint, and {source.directory} has none.'
      )
    wall_start = time.time()
    records = workdir_lib.MetricsLog.read(workdir)
    converged = [
        converged_at(records, int(state.step), index if config.seeds else None)
        for index in range(len(config.seeds) or 1)
    ]
    if not eval_only:
      state, converged = _train(
          config,
          task,
          model,
          optimizer,
          state,
          checkpointer,
          best,
          evaluate,
          check,
          mesh,
          converged,
      )
      _sync('trained')  # the reports read the log process 0 has written
    wall_seconds = time.time() - wall_start
    if member is not None:
      report = _member_report(
          config, task, model, state, member, wall_seconds, workdir, checkpoint
      )
    elif config.seeds:
      report = _population_report(
          config,
          task,
          model,
          state,
          evaluate,
          converged,
          wall_seconds,
          workdir,
          eval_only,
          checkpoint,
      )
    else:
      report = _final_report(
          config,
          task,
          model,
          state,
          evaluate_one,
          converged[0],
          wall_seconds,
          workdir,
          eval_only,
          checkpoint,
          _best_info(best, 0),
      )
  finally:
    checkpointer.close()
    if best is not None:
      best.close()
  return report


def restore_evaluated_params(
    config: ExperimentConfig,
    task: Task,
    checkpoint: str = 'latest',
    member: int | None = None,
) -> tuple[nn.Module, Any, int]:
  """The model, the parameters a run evaluates (the average where it keeps one) and the
  step, from the latest checkpoint in `config.workdir` or, with checkpoint='best', from
  best/: for analyses of a trained model outside the runner. For a population, `member`
  (a seed of `config.seeds`) says whose."""
  model = build_model(config, task)
  optimizer = make_optimizer(config.optimiser)
  if config.seeds:
    if member not in config.seeds:
      raise ValueError(f'member must be one of the seeds {config.seeds}; got {member!r}.')
    state = Population.start(
        create_population_state(model, optimizer, task, config.seeds)
    )
  else:
    state = create_train_state(model, optimizer, task, Keys(config.seed))
  if checkpoint == 'best' and config.seeds:
    if not os.path.isdir(os.path.join(config.workdir, 'best')):
      raise FileNotFoundError(f'{os.path.join(config.workdir, "best")} does not exist.')
    source = population_lib.BestMembers(config.workdir, state)
  else:
    source = checkpointing.open_saved(config.workdir, checkpoint)
  try:
    if checkpoint == 'best' and config.seeds:
      state = _best_state(source, state, config.ema_decay)
    else:
      state = _restore(source, state, config.ema_decay)
  finally:
    source.close()
  if config.seeds:
    index = config.seeds.index(member)
    return model, state.member(index).evaluated_params, int(state.members.step[index])
  return model, state.evaluated_params, int(state.step)


def _restore(
    checkpointer: checkpointing.Checkpointer,
    state: TrainState | Population,
    ema_decay: float,
) -> TrainState | Population:
  """The latest checkpoint, whether or not it was saved with a moving average.

  A run saved without an average that resumes with one starts the average from the
  restored parameters; a run saved with one that resumes without it drops it.
  """
  is_population = isinstance(state, Population)
  members = state.members if is_population else state
  like = members._replace(ema_params=None).to_checkpoint()
  if 'ema_params' in checkpointer.saved_keys(path=('members',) if is_population else ()):
    like['ema_params'] = members.params
  if is_population:
    tree = dict(members=like, failed=state.failed)
    if 'stopped' in checkpointer.saved_keys():
      tree['stopped'] = state.stopped
    restored = Population.from_checkpoint(checkpointer.restore(tree))
    return restored._replace(members=_with_average(restored.members, ema_decay))
  return _with_average(TrainState.from_checkpoint(checkpointer.restore(like)), ema_decay)


def _with_average(state: TrainState, ema_decay: float) -> TrainState:
  if not ema_decay:
    return state._replace(ema_params=None)
  if state.ema_params is None:
    return state._replace(ema_params=jax.tree.map(jnp.copy, state.params))
  return state


def _best_state(best, state, ema_decay: float):
  """The state best/ holds: for a population, every member's best state (members never
  evaluated keep `state`'s and count as failed)."""
  if isinstance(state, Population):
    population = best.population(jnp.asarray(best.steps < 0) | state.failed)
    return population._replace(members=_with_average(population.members, ema_decay))
  return _restore(best, state, ema_decay)


def _best_info(best, index: int) -> dict | None:
  """Member `index`'s best evaluation so far, {step, cost}, or None."""
  if isinstance(best, population_lib.BestMembers):
    if best.steps[index] < 0:
      return None
    return dict(step=int(best.steps[index]), cost=float(best.costs[index]))
  if best is None or best.latest_step() is None:
    return None
  return dict(step=best.latest_step(), cost=best.best_cost())


def _train(
    config: ExperimentConfig,
    task: Task,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    state: TrainState | Population,
    checkpointer: checkpointing.Checkpointer,
    best,
    evaluate: Callable,
    check: Callable | None,
    mesh: jax.sharding.Mesh | None,
    converged: list,
) -> tuple[TrainState | Population, list]:
  """Trains from `state` to `config.train_steps`, logging, evaluating and saving.

  `evaluate` and `check` (None without stop_when_generalising) are the run's (params,
  difficulty) -> per-member results on its evaluation and check sets.
  """
  loop = config.loop
  seeds = config.seeds
  workdir = os.path.abspath(config.workdir)
  start_step = int(state.step)
  # Process 0 rewrites the log (MetricsLog) that every process reads: not while another
  # still reads it.
  _sync('read the log')
  log = workdir_lib.MetricsLog(workdir, start_step)
  _sync('rewrote the log')
  options = dict(
      micro_batch_size=config.micro_batch_size,
      entropy_penalty=config.entropy_penalty,
      skip_grad_norm=config.skip_grad_norm,
      ema_decay=config.ema_decay,
  )
  if seeds:
    train_step = population_lib.make_population_step(
        model,
        optimizer,
        task,
        loop.batch_size,
        seeds,
        mesh,
        members_at_once=config.members_at_once,
        **options,
    )
  else:
    train_step = make_train_step(
        model, optimizer, task, loop.batch_size, Keys(config.seed).data, mesh, **options
    )
  progress = Progress(loop.train_steps)
  pending, window_start = [], time.time()
  steps_per_call = steps_in_one_call(mesh, len(seeds) or 1)
  if steps_per_call is not None:
    steps = train_state_lib.repeated_steps(train_step, steps_per_call)
  failed = list(population_lib.fetch(state.failed)) if seeds else [False]
  records = workdir_lib.MetricsLog.read(workdir)
  # The members that passed their generalisation check (stop_when_generalising): they
  # have finished, and their state no longer changes. Resumed without the option, they
  # train on.
  if check is None:
    stopped = [False] * (len(seeds) or 1)
    if seeds and population_lib.fetch(state.stopped).any():
      state = state.with_stopped(stopped)
  else:
    stopped = (
        [bool(s) for s in population_lib.fetch(state.stopped)]
        if seeds
        else [generalisation_passed(records, start_step) is not None]
    )
  if start_step >= loop.train_steps or all(
      done or dead for done, dead in zip(stopped, failed)
  ):
    return state, converged
  # Each member's current attempt (ExperimentConfig.restart_after): where it started and
  # its last `learning` evaluation, from the log up to the checkpoint
  # resumed from.
  attempts = [
      list(current_attempt(records, start_step, index if seeds else None))
      for index in range(len(seeds) or 1)
  ]
  initialize = train_state_lib.initializer(
      model, optimizer, task, state.ema_params is not None
  )

  def flush(step):
    """Fetches and logs the pending metrics; a single run raises if a loss is not
    finite, a population marks the members it froze and raises once all are."""
    nonlocal pending, window_start
    if not pending:
      return
    values = []  # each step's metrics
    counts = [count for _, count in pending]
    for metrics, count in zip(population_lib.fetch([m for m, _ in pending]), counts):
      values.extend(
          [metrics]
          if count is None
          else [{k: v[i] for k, v in metrics.items()} for i in range(count)]
      )
    first_step = step - len(values) + 1
    if seeds:
      now_failed = list(population_lib.fetch(state.failed))
      per_member = [
          [{k: v[i] for k, v in r.items()} for r in values] for i in range(len(seeds))
      ]
    else:
      now_failed, per_member = [False], [values]
    for index, member_values in enumerate(per_member):
      bad = next(
          (
              offset
              for offset, record in enumerate(member_values)
              if not math.isfinite(float(record['cost']))
          ),
          None,
      )
      if bad is None or (seeds and failed[index]) or stopped[index]:
        continue
      where = (
          f'the training loss became {float(member_values[bad]["cost"])} at step '
          f'{first_step + bad}'
      )
      if not seeds:
        raise NonFiniteLossError(
            f'{where}. The last good checkpoint (step {checkpointer.latest_step()}) is '
            f'kept in {checkpointer.directory}; lower --learning_rate or --clip, or '
            'change --seed, and rerun.'
        )
      progress.newline()
      print(
          f'Member seed {seeds[index]}: {where}; it is frozen at its last finite '
          'state and marked failed, the others go on.',
          flush=True,
      )
    failed[:] = [bool(f) for f in now_failed]
    elapsed = time.time() - window_start
    sequences_per_second = len(values) * loop.batch_size / elapsed
    live = []
    for index, member_values in enumerate(per_member):
      if stopped[index]:
        continue  # its run has ended
      means = {
          k: sum(float(r[k]) for r in member_values) / len(member_values)
          for k in member_values[0]
      }
      # The window's largest step gradient: a spike's is orders above the mean's.
      largest = max(float(r['grad_norm']) for r in member_values)
      record = dict(
          kind='train',
          step=step,
          sequences=step * loop.batch_size,
          sequences_per_second=sequences_per_second,
          **means,
          grad_norm_max=largest,
      )
      if seeds:
        record.update(member=index, seed=seeds[index], failed=failed[index])
      log.write(record)
      if not failed[index]:
        live.append(means)
    if seeds and all(failed):
      raise NonFiniteLossError(
          f'the training loss of every member of the population stopped being finite '
          f'(by step {step}). The last checkpoint (step {checkpointer.latest_step()}) is '
          f'kept in {checkpointer.directory}; lower --learning_rate or --clip, or change '
          '--seeds, and rerun.'
      )
    if live:
      progress.update(
          step,
          sequences_per_second * stopped.count(False),
          float(np.median([m['cost'] for m in live])),
          float(np.median([m['bit_errors'] for m in live])),
      )
    pending, window_start = [], time.time()

  hardest = task.eval_difficulties[-1] if task.eval_difficulties else None

  def attempts_to_restart(step, train_evals) -> dict[int, tuple[str, str]]:
    """The live members whose attempt restarts at this evaluation, with why: no
    `learning` evaluation in the last `restart_after` steps of the
    attempt (it never learned, or it collapsed back onto a plateau). A new attempt needs
    `restart_after` steps of its own: with fewer left, the attempt trains on."""
    restarting = {}
    for index, train_eval in enumerate(train_evals):
      if failed[index] or stopped[index]:
        continue
      if learning(train_eval):
        attempts[index][1] = step
      started, learned_at = attempts[index]
      if (
          step - started >= loop.restart_after
          and step - (learned_at or started) >= loop.restart_after
          and step + loop.restart_after <= loop.train_steps
      ):
        since = (
            f'since step {learned_at}'
            if learned_at
            else f'in {step - started} steps of this attempt'
        )
        lacking, now = not_learning(train_eval)
        restarting[index] = (
            'collapsed' if learned_at else 'not learning',
            f'{lacking} {since} ({now})',
        )
    return restarting

  def check_generalisation(state, step, train_evals) -> list[int]:
    """Checks every live member that has converged at this evaluation on its check
    sequences of the hardest difficulty; logs each check and returns the members that
    passed (fewer than GENERALISING_BIT_ERRORS bit errors per sequence): they stop."""
    converged_now = [
        i
        for i, e in enumerate(train_evals)
        if not (failed[i] or stopped[i]) and e['bit_errors'] < CONVERGED_BIT_ERRORS
    ]
    if not converged_now:
      return []
    label = task.difficulty_label(hardest)
    results = check(state.evaluated_params, hardest)
    passed = []
    for index in converged_now:
      errors = results[index]['bit_errors']
      record = dict(
          kind='generalisation_check',
          step=step,
          sequences=step * loop.batch_size,
          difficulty=label,
          sequences_checked=CHECK_SEQUENCES,
          bit_errors=errors,
          cost=results[index]['cost'],
          passed=errors < GENERALISING_BIT_ERRORS,
      )
      if seeds:
        record.update(member=index, seed=seeds[index])
      log.write(record)
      if record['passed']:
        passed.append(index)
        progress.newline()
        print(
            f'{_who(seeds, index)}: converged, and {errors:.3f} bit errors per sequence '
            f'on {CHECK_SEQUENCES} check sequences of {label} (below '
            f'{GENERALISING_BIT_ERRORS:g}): stopped at step {step} '
            '(stop_when_generalising).',
            flush=True,
        )
    return passed

  def restart(state, restarting: dict[int, tuple[str, str]], step, train_evals):
    """`state` with these members' attempts begun afresh at `step`, each logged and
    printed with why ({index: (reason, explanation)})."""
    indices = sorted(restarting)
    if not seeds:
      fresh = initialize(Keys(config.seed), step)
      state = fresh if mesh is None else replicate(fresh, mesh)
    else:
      state = state.replace_members(
          {i: initialize(Keys(seeds[i]), step) for i in indices}
      )
    progress.newline()
    for index in indices:
      record = dict(
          kind='restart',
          step=step,
          sequences=step * loop.batch_size,
          attempt_started=attempts[index][0],
          train_bit_errors=train_evals[index]['bit_errors'],
          reason=restarting[index][0],
      )
      if seeds:
        record.update(member=index, seed=seeds[index])
      log.write(record)
      print(
          f'{_who(seeds, index)}: {restarting[index][1]}; restarted from a fresh '
          f'initialisation at step {step} (restart_after={loop.restart_after}).',
          flush=True,
      )
      attempts[index] = [step, None]
      converged[index] = None  # the discarded attempt's convergence does not count
    return state

  step = start_step
  periods = (
      loop.log_every,
      loop.eval_every,
      loop.checkpoint_every,
  )  # where the loop acts
  try:
    while step < loop.train_steps:
      if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt
      if steps_per_call is None:
        state, step_metrics = train_step(state)
        step += 1
        pending.append((step_metrics, None))
      else:
        # Up to the next step where something happens (a log line, an evaluation, a
        # checkpoint, the end), so that the loop sees every one of them.
        count = min(
            [steps_per_call, loop.train_steps - step]
            + [every - step % every for every in periods]
        )
        state, step_metrics = steps(state, count)
        step += count
        pending.append((step_metrics, count))
        jax.block_until_ready(step_metrics)
      last = step == loop.train_steps
      boundary = lambda every, step=step, last=last: step % every == 0 or last
      if any(boundary(every) for every in periods):
        flush(step)
      stop = False
      # Evaluating before saving: a restart decided at this step is in its checkpoint.
      if boundary(loop.eval_every):
        eval_start = time.time()
        train_evals = evaluate(state.evaluated_params, None)
        unaveraged = (
            evaluate(state.params, None) if state.ema_params is not None else None
        )
        for index, train_eval in enumerate(train_evals):
          if stopped[index]:
            continue
          record = dict(
              kind='eval', step=step, sequences=step * loop.batch_size, train=train_eval
          )
          if unaveraged is not None:
            record['unaveraged'] = unaveraged[index]
          if seeds:
            record.update(member=index, seed=seeds[index], failed=failed[index])
          log.write(record)
          if (
              converged[index] is None
              and not failed[index]
              and train_eval['bit_errors'] < CONVERGED_BIT_ERRORS
          ):
            converged[index] = step * loop.batch_size
        restarting = attempts_to_restart(step, train_evals) if loop.restart_after else {}
        costs = [e['cost'] for e in train_evals]
        if seeds:
          best.update(step, state, costs)
        else:
          best.save(step, state.to_checkpoint(), costs[0])
        if restarting:
          state = restart(state, restarting, step, train_evals)
        if check is not None and hardest is not None:
          passed = check_generalisation(state, step, train_evals)
          for index in passed:
            stopped[index] = True
          if passed and seeds:
            state = state.with_stopped(stopped)
        window_start += time.time() - eval_start  # evaluations don't count as training
        reached = [
            e['bit_errors'] < loop.target_bit_errors or done
            for e, dead, done in zip(train_evals, failed, stopped)
            if not dead
        ]
        stop = 0 < loop.target_bit_errors and reached and all(reached)
        stop = stop or all(done or dead for done, dead in zip(stopped, failed))
      if boundary(loop.checkpoint_every) or stop:
        checkpointer.save(step, state.to_checkpoint())
      if stop:
        progress.newline()
        if not all(stopped):
          errors = max(
              e['bit_errors'] for e, dead in zip(train_evals, failed) if not dead
          )
          print(
              f'Reached {errors:.3f} bit errors per sequence '
              f'(target {loop.target_bit_errors}) at step {step}; stopping.',
              flush=True,
          )
        break
  except KeyboardInterrupt:
    progress.newline()
    if any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state)):
      # Interrupted while a step was being dispatched: the step had already taken the
      # donated state, so there is nothing newer than the last checkpoint to save.
      print(
          'Interrupted during a training step: kept the checkpoint at step '
          f'{checkpointer.latest_step()}; rerun the same command to resume.',
          flush=True,
      )
      raise
    # Keep what was learned: save the current state if its losses were all finite.
    flush(step)
    step = int(state.step)  # the step the state has reached, whatever the loop counted
    checkpointer.save(step, state.to_checkpoint())
    print(
        f'Interrupted: saved the checkpoint at step {step}; rerun the same command '
        'to resume.',
        flush=True,
    )
    raise
  progress.newline()
  return state, converged


def steps_in_one_call(mesh: jax.sharding.Mesh | None, members: int) -> int | None:
  """How many training steps the loop runs per call: None, one call per step,
  dispatched ahead; where it waits for each call, up to STEPS_PER_CALL over the members
  on each device (`members` over `mesh`), in one call (train_state.repeated_steps)."""
  if not _waits_for_each_step(mesh):
    return None
  return max(1, STEPS_PER_CALL // max(1, members // mesh.size))


def _waits_for_each_step(mesh: jax.sharding.Mesh | None) -> bool:
  """Whether the loop waits for each call of the step to finish before dispatching the
  next (and so runs several steps per call, `steps_in_one_call`): on CPU devices, when a
  step spans several of them. Dispatched ahead there, a data-parallel step's all-reduce
  can deadlock (XLA aborts the process when its rendezvous times out) and a population
  over the cores steps slower; one device dispatches ahead, where waiting is slower
  (BUILD_NOTES.md, "Training runner invariants")."""
  return mesh is not None and mesh.devices.flat[0].platform == 'cpu'


def _final_report(
    config: ExperimentConfig,
    task: Task,
    model: nn.Module,
    state: TrainState,
    evaluate: Callable,
    converged: int | None,
    wall_seconds: float,
    workdir: str,
    eval_only: bool,
    checkpoint: str,
    best: dict | None,
) -> dict:
  """Evaluates every difficulty, writes report.json and the figures, prints the tables.

  `evaluate` is the run's (params, difficulty) -> results; `best` its best evaluation
  so far, {step, cost}, or None.
  """
  step = int(state.step)
  results = evaluate_all(evaluate, state.evaluated_params, task)
  report = dict(
      task=task.name,
      model=config.model,
      seed=config.seed,
      step=step,
      sequences=step * config.batch_size,
      converged_at_sequences=converged,
      wall_seconds=wall_seconds,
      eval_only=eval_only,
      checkpoint=checkpoint,
      results=results,
  )
  if state.ema_params is not None:
    report['unaveraged_results'] = evaluate_all(evaluate, state.params, task)
  if best is not None:
    report['best'] = best
  records = workdir_lib.MetricsLog.read(workdir)
  restarts = restarts_in(records, step)
  if restarts:
    report['restarts'] = [r['step'] for r in restarts]
    report['restart_reasons'] = [r.get('reason', 'not learning') for r in restarts]
  stopped = _stop_record(records, step, None)
  if stopped:
    report['stopped_generalising'] = stopped
  _write_report(workdir, report)
  which = "the best evaluation's checkpoint" if checkpoint == 'best' else 'step'
  print(
      f'\n{task.name}, {config.model}, {which} {step} ({step * config.batch_size} '
      f'sequences), evaluated on {_sequences_evaluated(config)}:'
  )
  print(format_report(task, results))
  if state.ema_params is not None:
    print(
        f'Averaged parameters (ema_decay={config.ema_decay}); the parameters '
        'themselves:'
    )
    print(format_report(task, report['unaveraged_results']))
  if restarts:
    print(
        'Restarted from a fresh initialisation at step(s) '
        + ', '.join(f'{r["step"]} ({r.get("reason", "not learning")})' for r in restarts)
        + ': this report is of the last attempt.'
    )
  if converged is not None:
    print(
        f'Converged (< {CONVERGED_BIT_ERRORS} bit errors per sequence) after '
        f'{converged} sequences in all.'
        if restarts
        else f'Converged (< {CONVERGED_BIT_ERRORS} bit errors per sequence) after '
        f'{converged} sequences.'
    )
  if stopped:
    print(
        f'Stopped at step {stopped["step"]}, converged and generalising: '
        f'{stopped["bit_errors"]:.3f} bit errors per sequence on '
        f'{stopped["sequences_checked"]} check sequences of {stopped["difficulty"]}.'
    )
  if 'best' in report and report['best']['step'] != step:
    # A run can end inside a late cost spike: say so, and which state each tool uses.
    report['ended_worse_than_best'] = ended_worse(
        results['train']['cost'], report['best']['cost']
    )
    if report['ended_worse_than_best']:
      print(
          f'Ended worse than its best evaluation: cost {results["train"]["cost"]:.3f} '
          f'on the training mix at step {step}, against {report["best"]["cost"]:.3f} '
          f'at step {report["best"]["step"]} (the star in learning_curve.png). This '
          'report, --eval_only and experiments.tools.ship use the final state; '
          '--checkpoint=best uses the best one.'
      )
    else:
      print(
          f'The best evaluation was at step {report["best"]["step"]} (cost '
          f'{report["best"]["cost"]:.3f} on the training mix); --eval_only '
          '--checkpoint=best evaluates its checkpoint.'
      )
    _write_report(workdir, report)
  params = _on_host(state.evaluated_params) if config.plots else None
  if config.plots and workdir_lib.is_writer():
    paths = plots.write_all(workdir, task, model, params, keys=Keys(config.seed))
    print('Figures: ' + ', '.join(paths))
  print(f'Report: {os.path.join(workdir, "report.json")}', flush=True)
  return report


def _stop_record(records: list[dict], step: int, member: int | None) -> dict | None:
  """The passed generalisation check the run (or member) stopped at, for its report."""
  passed = generalisation_passed(records, step, member)
  if passed is None:
    return None
  return {
      k: passed.get(k) for k in ('step', 'difficulty', 'sequences_checked', 'bit_errors')
  }


def _who(seeds, index: int) -> str:
  return f'Member seed {seeds[index]}' if seeds else 'The run'


_SYNCS = itertools.count()
_SYNC_TIMEOUT_SECONDS = 900


def _sync(name: str) -> None:
  """In a multi-process run, waits until every process has got here: at the
  coordination service's barrier (as Orbax's are, experiments/common.py), not a device
  collective, which aborted a two-process CPU run under load (CI, at the barrier after
  training). Every process passes the same barriers in the same order, so the count
  makes each key unique, as the service requires."""
  if jax.process_count() > 1:
    barrier = orbax_multihost.get_barrier_sync_fn()
    barrier(key=f'ntm_jax.{name}.{next(_SYNCS)}', timeout_ms=_SYNC_TIMEOUT_SECONDS * 1000)


def _on_host(tree: Any) -> Any:
  """`tree` whole on this host, for the figures, which process 0 alone draws. In a
  multi-process run the arrays span the processes' devices, and every process must call
  this (it gathers)."""
  return tree if jax.process_count() == 1 else population_lib.fetch(tree)


def _sequences_evaluated(config: ExperimentConfig) -> str:
  if config.difficulty_batch_size == config.eval_batch_size:
    return f'{config.eval_batch_size} sequences per row'
  return (
      f'{config.eval_batch_size} sequences of the training mix and '
      f'{config.difficulty_batch_size} per generalisation difficulty'
  )


def _write_report(workdir: str, report: dict) -> None:
  if workdir_lib.is_writer():
    workdir_lib.write_whole(
        os.path.join(workdir, 'report.json'), json.dumps(report, indent=2)
    )


def _best_costs(records: list[dict], size: int) -> list[float]:
  """Each member's lowest evaluation cost on the training mix in the metrics log, above
  its reference predictor's where the task has one (population.judged_value: members
  are evaluated on sequences of their own); a failed member's records do not count."""
  return [
      min(
          (
              population_lib.judged_value(r['train'], 'cost')
              for r in evaluations(records, index)
          ),
          default=math.inf,
      )
      for index in range(size)
  ]


def _chosen_member(workdir: str, records: list[dict], seeds, failed, member) -> int:
  """The index of `member` (a seed), or with 'best', of the best member named by the
  population's report.json (population.overall_score); with no report to go by (a run
  stopped before its end), of the member whose best evaluation on the training mix has
  the lowest cost."""
  if member != 'best':
    return seeds.index(member)
  try:
    with open(os.path.join(workdir, 'report.json')) as f:
      named = json.load(f).get('best_member')
  except (OSError, ValueError):
    named = None
  if named in seeds and not failed[seeds.index(named)]:
    return seeds.index(named)
  index = population_lib.best_member(_best_costs(records, len(seeds)), failed)
  if index is None:
    raise ValueError(
        '--member=best: no member of this population has a finite '
        'evaluation; name one with --member=<seed>.'
    )
  return index


def _population_report(
    config: ExperimentConfig,
    task: Task,
    model: nn.Module,
    state: Population,
    evaluate: Callable,
    converged: list,
    wall_seconds: float,
    workdir: str,
    eval_only: bool,
    checkpoint: str,
) -> dict:
  """Evaluates every member on every difficulty; writes report.json (every member's
  report, the summary over members, the best member) and the figures; prints the
  table over seeds."""
  seeds = config.seeds
  failed = [bool(f) for f in population_lib.fetch(state.failed)]
  steps = [int(s) for s in population_lib.fetch(state.members.step)]

  def all_results(params):
    by_difficulty = {'train': evaluate(params, None)}
    for difficulty in task.eval_difficulties:
      by_difficulty[task.difficulty_label(difficulty)] = evaluate(params, difficulty)
    return [
        {label: results[i] for label, results in by_difficulty.items()}
        for i in range(len(seeds))
    ]

  results = all_results(state.evaluated_params)
  unaveraged = all_results(state.params) if state.ema_params is not None else None
  records = workdir_lib.MetricsLog.read(workdir)
  members = []
  for index, seed in enumerate(seeds):
    report = dict(
        seed=seed,
        failed=failed[index],
        step=steps[index],
        sequences=steps[index] * config.batch_size,
        converged_at_sequences=converged[index],
        results=results[index],
    )
    if unaveraged is not None:
      report['unaveraged_results'] = unaveraged[index]
    best = best_evaluation(records, index)
    if best:
      report['best'] = best
      if best['step'] != steps[index]:  # as a single run's report says it
        report['ended_worse_than_best'] = ended_worse(
            results[index]['train']['cost'], best['cost']
        )
    restarts = restarts_in(records, steps[index], index)
    if restarts:
      report['restarts'] = [r['step'] for r in restarts]
      report['restart_reasons'] = [r.get('reason', 'not learning') for r in restarts]
    stopped = _stop_record(records, steps[index], index)
    if stopped:
      report['stopped_generalising'] = stopped
    members.append(report)
  labels = list(results[0])
  summary = population_lib.summary(members, labels)
  overall = [population_lib.overall_score(m, task.judged_by) for m in members]
  best_index = population_lib.best_member(overall, failed)
  step = int(state.step)
  report = dict(
      task=task.name,
      model=config.model,
      seeds=list(seeds),
      step=step,
      sequences=step * config.batch_size,
      wall_seconds=wall_seconds,
      eval_only=eval_only,
      checkpoint=checkpoint,
      members=members,
      summary=summary,
      best_member=None if best_index is None else seeds[best_index],
  )
  _write_report(workdir, report)
  which = "each member's best evaluation" if checkpoint == 'best' else f'step {step}'
  print(
      f'\n{task.name}, {config.model}, population of {len(seeds)}, {which}, evaluated '
      f'on {_sequences_evaluated(config)}:'
  )
  print(population_lib.format_table(task, members, summary))
  worse = [m for m in members if m.get('ended_worse_than_best') and not m['failed']]
  if worse:
    print(
        'Ended worse than their best evaluation (cost on the training mix, final against '
        'best): '
        + ', '.join(
            f'seed {m["seed"]} {m["results"]["train"]["cost"]:.3f} at step {m["step"]} '
            f'against {m["best"]["cost"]:.3f} at {m["best"]["step"]}'
            for m in worse
        )
        + '. The table, --eval_only and experiments.tools.ship use the final states; '
        "--checkpoint=best each member's best."
    )
  if best_index is not None:
    misses, judged, cost = overall[best_index]
    if task.judged_by == 'bit_errors':
      fit = f'{CONVERGED_BIT_ERRORS} bit errors per sequence on the training mix'
      fits = f'none is below {fit}; ' if misses else f'below {fit} and of those '
      score = (
          f'{fits}the fewest bit errors summed over the training mix and every '
          f'difficulty above, {judged:.3f}; its cost {cost:.3f}'
      )
    elif 'reference_cost' in next(iter(members[best_index]['results'].values())):
      score = (
          "lowest cost above the optimal estimator's summed over the training mix "
          f'and every difficulty above, {judged:.3f}'
      )
    else:
      score = (
          'lowest cost summed over the training mix and every difficulty above, '
          f'{cost:.3f}'
      )
    print(
        f'Best member: seed {seeds[best_index]} ({score}); --eval_only '
        '--member=best evaluates it, experiments.tools.ship --member=best ships it.'
    )
  params = (
      _on_host(state.member(best_index).evaluated_params)
      if config.plots and best_index is not None
      else None
  )
  if config.plots and workdir_lib.is_writer():
    paths = [os.path.join(workdir, 'learning_curve.png')]
    plots.learning_curve(workdir, paths[0])
    if best_index is not None:
      paths = plots.write_all(workdir, task, model, params, keys=Keys(seeds[best_index]))
    print('Figures: ' + ', '.join(paths))
  print(f'Report: {os.path.join(workdir, "report.json")}', flush=True)
  return report


def _member_report(
    config: ExperimentConfig,
    task: Task,
    model: nn.Module,
    state: Population,
    member: int | str,
    wall_seconds: float,
    workdir: str,
    checkpoint: str,
) -> dict:
  """Evaluates one member as its single run's workdir would be evaluated: its report,
  figures and its own metrics.jsonl go into `<workdir>/member_seed<seed>/`."""
  records = workdir_lib.MetricsLog.read(workdir)
  failed = [bool(f) for f in population_lib.fetch(state.failed)]
  index = _chosen_member(workdir, records, config.seeds, failed, member)
  seed = config.seeds[index]
  directory = population_lib.member_directory(workdir, seed)
  os.makedirs(directory, exist_ok=True)
  _write_member_metrics(records, index, directory)
  single = config.replace(seeds=(), seed=seed, workdir=directory)
  member_state = state.member(index)
  best = best_evaluation(records, index)
  if failed[index]:
    print(
        f'Member seed {seed} failed during training (its loss stopped being finite); '
        'its state is the last finite one.',
        flush=True,
    )
  print(f'Member seed {seed} of the population in {workdir}:', flush=True)
  evaluate = make_evaluator(
      model,
      task,
      Keys(seed),
      config.eval_batch_size,
      difficulty_batch_size=config.difficulty_batch_size,
  )
  return _final_report(
      single,
      task,
      model,
      member_state,
      evaluate,
      converged_at(records, int(member_state.step), index),
      wall_seconds,
      directory,
      True,
      checkpoint,
      best,
  )


def export_member(
    config: ExperimentConfig,
    task: Task,
    member: int | str,
    directory: str,
    checkpoint: str = 'latest',
) -> int:
  """Writes one member of the population in `config.workdir` as a single run's workdir.

  `member` is a seed of `config.seeds`, or 'best' for the best member (`_chosen_member`:
  the one the population's report names). `directory` gets that member's state from the
  latest checkpoint (or, with checkpoint='best', from best/) as its only checkpoint, its
  config (a single run of its seed) and its own metrics.jsonl: evaluating, resuming or
  shipping it is evaluating, resuming or shipping run `--seed=<seed>`. Returns the
  member's seed.
  """
  seeds = config.seeds
  if not seeds:
    raise ValueError(f'--member: {config.workdir} holds a single run, not a population.')
  if member != 'best' and member not in seeds:
    raise ValueError(
        f'--member must be best or one of the seeds '
        f'{",".join(map(str, seeds))}; got {member!r}.'
    )
  model = build_model(config, task)
  state = Population.start(
      create_population_state(
          model, make_optimizer(config.optimiser), task, seeds, bool(config.ema_decay)
      )
  )
  if checkpoint == 'best':
    if not os.path.isdir(os.path.join(config.workdir, 'best')):
      raise FileNotFoundError(f'{os.path.join(config.workdir, "best")} does not exist.')
    source = population_lib.BestMembers(config.workdir, state)
  else:
    source = checkpointing.open_saved(config.workdir, 'latest')
  try:
    state = (
        _best_state(source, state, config.ema_decay)
        if checkpoint == 'best'
        else _restore(source, state, config.ema_decay)
    )
  finally:
    source.close()
  records = workdir_lib.MetricsLog.read(config.workdir)
  failed = [bool(f) for f in population_lib.fetch(state.failed)]
  index = _chosen_member(config.workdir, records, seeds, failed, member)
  member_state = state.member(index)
  os.makedirs(directory, exist_ok=True)
  single = config.replace(seeds=(), seed=seeds[index], workdir=directory)
  workdir_lib.record_config(directory, single, task, resuming=False)
  _write_member_metrics(records, index, directory)
  saver = checkpointing.Checkpointer(directory)
  try:
    saver.save(int(member_state.step), member_state.to_checkpoint())
  finally:
    saver.close()
  return seeds[index]


def _write_member_metrics(records: list[dict], index: int, directory: str) -> list[dict]:
  """Member `index`'s records, as its single run would have logged them, written to
  `<directory>/metrics.jsonl`; returns them."""
  own = [
      {k: v for k, v in r.items() if k not in ('member', 'seed', 'failed')}
      for r in records
      if r.get('member') == index
  ]
  if not workdir_lib.is_writer():
    return own
  workdir_lib.write_whole(
      os.path.join(directory, 'metrics.jsonl'), ''.join(json.dumps(r) + '\n' for r in own)
  )
  return own
