"""Populations (--seeds): member k is the run --seed=k; resuming, failures, reports."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntm_jax.tasks import CopyTask
from ntm_jax.tasks import DynamicNGramsTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import NonFiniteLossError
from ntm_jax.training import WorkdirMismatchError
from ntm_jax.training import evaluation
from ntm_jax.training import factory
from ntm_jax.training import loop
from ntm_jax.training import optim
from ntm_jax.training import population
from ntm_jax.training import run
from ntm_jax.training import train_state

TINY = dict(
    batch_size=2,
    memory_size=8,
    word_size=4,
    controller_features=16,
    eval_batch_size=4,
    plots=False,
    log_every=5,
    eval_every=10,
    checkpoint_every=10,
)
SEEDS = (4, 9, 2)


def tiny_task(cls=CopyTask):
  return cls(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))


def _allclose(a, b):
  # Float32 rounding: a batched matrix product may sum in another order.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


def test_the_best_member_is_the_one_that_generalises():
  # Copy seeds 46 and 45: the first fits the training mix a little better, the second
  # copies every length-120 sequence.
  members = [
      dict(
          results={
              'train': dict(cost=0.00098, bit_errors=0.0),
              '120': dict(cost=31.0, bit_errors=1.8),
          }
      ),
      dict(
          results={
              'train': dict(cost=0.00115, bit_errors=0.0),
              '120': dict(cost=0.02, bit_errors=0.0),
          }
      ),
      dict(
          results={
              'train': dict(cost=0.0, bit_errors=0.0),
              '120': dict(cost=float('nan'), bit_errors=float('nan')),
          }
      ),
  ]
  scores = [population.overall_score(m) for m in members]
  assert population.best_member(scores, [False, False, False]) == 1
  assert population.best_member(scores, [False, True, False]) == 0


def test_the_best_member_fits_its_training_mix_before_it_generalises():
  # Repeat copy: the first member ends inside a cost spike (seed 101 ended at 0.18 bit
  # errors per sequence on the training mix); its sum over 20 x 20 is the lower, and
  # would name it. With no member below 0.1 on the training mix, the sums decide.
  result = lambda errors: dict(cost=errors, bit_errors=errors)  # noqa: E731
  members = [
      dict(results={'train': result(0.18), '20x20': result(700.0)}),
      dict(results={'train': result(0.0), '20x20': result(1036.0)}),
      dict(results={'train': result(0.1), '20x20': result(600.0)}),
  ]
  scores = [population.overall_score(m) for m in members]
  assert population.best_member(scores, [False, False, False]) == 1
  assert population.best_member(scores, [False, True, False]) == 2
  assert population.best_member(scores[:1] + scores[2:], [False, False]) == 1
  # A task judged by its cost (N-grams) has no bit-error threshold to fit.
  assert (
      population.best_member(
          [population.overall_score(m, 'cost') for m in members], [False, False, False]
      )
      == 2
  )


def test_the_best_member_is_ranked_by_what_the_task_is_judged_by():
  # Copy seeds 1126 and 1129 at length 120: the second's cost is lower, its bit errors
  # are five times as many. N-grams is judged by its cost.
  members = [
      dict(
          results={
              'train': dict(cost=0.004, bit_errors=0.0),
              '120': dict(cost=3.63, bit_errors=0.227),
          }
      ),
      dict(
          results={
              'train': dict(cost=0.004, bit_errors=0.0),
              '120': dict(cost=3.55, bit_errors=1.073),
          }
      ),
  ]
  assert (
      population.best_member(
          [population.overall_score(m) for m in members], [False, False]
      )
      == 0
  )
  assert (
      population.best_member(
          [population.overall_score(m, 'cost') for m in members], [False, False]
      )
      == 1
  )
  assert CopyTask.judged_by == 'bit_errors' and DynamicNGramsTask.judged_by == 'cost'
  # N-grams seeds 2102 and 2103, each on its own evaluation sequences: the second's raw
  # cost is lower, its cost above the optimal estimator's nearly twice the first's.
  result = lambda cost, reference: dict(
      cost=cost, bit_errors=46.0, reference_cost=reference  # noqa: E731
  )
  ngrams = [
      dict(results={'train': result(131.85, 130.74), '200': result(133.79, 132.54)}),
      dict(results={'train': result(133.46, 131.29), '200': result(131.71, 129.65)}),
  ]
  assert (
      population.best_member(
          [population.overall_score(m, 'cost') for m in ngrams], [False, False]
      )
      == 0
  )


def test_the_table_shows_what_the_task_is_judged_by():
  # N-grams members from seeds 2100 and 2101: both make about 46 bit errors per
  # sequence, which says nothing; their costs above the optimal estimator's do.
  members = [
      dict(
          seed=2100,
          failed=False,
          converged_at_sequences=None,
          restarts=[],
          results={
              'train': dict(cost=133.44, bit_errors=46.31, reference_cost=131.88),
              '200': dict(cost=132.71, bit_errors=46.58, reference_cost=131.21),
          },
      ),
      dict(
          seed=2101,
          failed=False,
          converged_at_sequences=None,
          restarts=[24000, 48000],
          results={
              'train': dict(cost=136.43, bit_errors=47.33, reference_cost=131.76),
              '200': dict(cost=135.49, bit_errors=46.61, reference_cost=130.83),
          },
      ),
  ]
  summary = population.summary(members, ['train', '200'])
  assert summary['above_reference']['train']['worst'] == pytest.approx(4.67)
  assert summary['cost']['200']['median'] == pytest.approx((132.71 + 135.49) / 2)
  task = DynamicNGramsTask(length=200, eval_lengths=(200,))
  rows = {
      line.split('|')[0].strip(): [float(x) for x in line.split('|')[2:]]
      for line in population.format_table(task, members, summary).splitlines()
      if line.count('|') == 3 and 'seed' not in line
  }
  assert rows['2100'] == pytest.approx([1.56, 1.50]) and rows['2101'] == pytest.approx(
      [4.67, 4.66]
  )
  assert rows['worst'] == pytest.approx([4.67, 4.66])
  # Copy's table stays in bit errors.
  copy_table = population.format_table(tiny_task(), members, summary)
  assert copy_table.startswith('bit errors per sequence') and '46.310' in copy_table


@pytest.mark.parametrize(
    'text,seeds',
    [('0-3', (0, 1, 2, 3)), ('3,7,11', (3, 7, 11)), ('0-1, 8', (0, 1, 8)), ('5', (5,))],
)
def test_seeds_parse_from_ranges_and_lists(text, seeds):
  assert population.parse_seeds(text) == seeds


@pytest.mark.parametrize('text', ['', '3-1', 'a', '1,1', '-2', '0-x'])
def test_bad_seeds_are_a_clear_error(text):
  with pytest.raises(ValueError, match='--seeds'):
    population.parse_seeds(text)


class _RecordingCopy(CopyTask):
  """Copy that records the inputs of every training batch it draws (also under jit and
  vmap, where a vmapped draw reports each member's batch in member order)."""

  drawn = []

  def sample_train(self, key, batch_size):
    batch = super().sample_train(key, batch_size)
    jax.debug.callback(lambda x: self.drawn.append(np.asarray(x)), batch.inputs)
    return batch


def test_each_member_starts_as_and_draws_the_batches_of_its_single_run():
  task = tiny_task(_RecordingCopy)
  config = ExperimentConfig(workdir='/unused', **TINY)
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config.optimiser)
  members = train_state.create_population_state(model, optimizer, task, SEEDS)
  for index, seed in enumerate(SEEDS):  # bit for bit the single run's first state
    single = train_state.create_train_state(
        model, optimizer, task, train_state.Keys(seed)
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        single,
        jax.tree.map(lambda x, i=index: x[i], members),
    )
  state = population.Population.start(members)
  step = population.make_population_step(model, optimizer, task, 2, SEEDS)
  jax.effects_barrier()
  _RecordingCopy.drawn.clear()
  for _ in range(3):
    state, _ = step(state)
  jax.effects_barrier()
  drawn = list(_RecordingCopy.drawn)
  assert len(drawn) == 3 * len(SEEDS)
  singles = []
  for seed in SEEDS:
    keys = train_state.Keys(seed)
    single_state = train_state.create_train_state(model, optimizer, task, keys)
    jax.effects_barrier()
    _RecordingCopy.drawn.clear()  # the initialisation's sample aside
    single_step = train_state.make_train_step(model, optimizer, task, 2, keys.data)
    for _ in range(3):
      single_state, _ = single_step(single_state)
    jax.effects_barrier()
    singles.append(list(_RecordingCopy.drawn))
  # XLA may run a step's members' callbacks in any order: compare each step's batches
  # as sets (that member k follows seed k is the next test's).
  for step in range(3):
    population_batches = sorted(x.tobytes() for x in drawn[3 * step : 3 * step + 3])
    single_batches = sorted(batches[step].tobytes() for batches in singles)
    assert population_batches == single_batches
  # The data differ between members: the test would pass trivially otherwise.
  assert len(set(population_batches)) == len(SEEDS)


def test_members_stepped_a_few_at_a_time_equal_members_stepped_all_at_once():
  # Six members: 4 at a time (the CPU's choice when not told) leaves a remainder of 2.
  assert population.automatic_members_at_once('cpu') == population.CPU_MEMBERS_AT_ONCE
  assert population.automatic_members_at_once('gpu') == 0  # all at once
  seeds = (4, 9, 2, 7, 11, 5)
  task = tiny_task()
  # SGD and a learned memory: Adam's first steps turn the float32 rounding of near-zero
  # gradients (summed in another order by a batched product) into full-size updates.
  config = ExperimentConfig(
      workdir='/unused',
      **dict(TINY, optimizer='sgd', learning_rate=0.1, memory_init='learned'),
  )
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config.optimiser)
  results = []
  for at_once in (len(seeds), 0, 1):
    state = population.Population.start(
        train_state.create_population_state(model, optimizer, task, seeds)
    )
    step = population.make_population_step(
        model, optimizer, task, 2, seeds, members_at_once=at_once
    )
    costs = []
    for _ in range(4):
      state, metrics = step(state)
      costs.append(metrics['cost'])
    results.append((state.members, np.stack(costs)))
  (all_at_once, costs), *others = results
  assert len({float(c) for c in costs[-1]}) == len(seeds)  # the members differ
  for members, other_costs in others:
    _allclose(all_at_once, members)
    np.testing.assert_allclose(costs, other_costs, rtol=1e-5)


def test_generalisation_difficulties_are_evaluated_on_their_own_number_of_sequences():
  task = tiny_task()
  config = ExperimentConfig(workdir='/unused', **TINY)
  model = factory.build_model(config, task)
  members = train_state.create_population_state(
      model, optim.make_optimizer(config.optimiser), task, SEEDS
  )
  batch_evaluation = jax.jit(evaluation.batch_evaluation(model, task))
  single = evaluation.make_evaluator(
      model, task, train_state.Keys(SEEDS[1]), 4, difficulty_batch_size=32
  )
  together = population.make_population_evaluator(
      model, task, SEEDS, 4, difficulty_batch_size=32
  )
  params = jax.tree.map(lambda x: x[1], members.params)
  for difficulty, size in ((None, 4), (5, 32)):
    expected = batch_evaluation(
        params, evaluation.eval_set(task, train_state.Keys(SEEDS[1]), difficulty, size)
    )
    other = batch_evaluation(
        params,
        evaluation.eval_set(task, train_state.Keys(SEEDS[1]), difficulty, 36 - size),
    )
    assert float(other['cost']) != pytest.approx(float(expected['cost']), rel=1e-4)
    for results in (single(params, difficulty), together(members.params, difficulty)[1]):
      assert results['cost'] == pytest.approx(float(expected['cost']), rel=1e-4)


@pytest.mark.slow  # two runs of 200 steps
def test_member_k_trains_evaluates_and_ships_as_the_run_of_seed_k(tmp_path):
  task = tiny_task()
  settings = dict(
      TINY,
      train_steps=200,
      eval_every=50,
      checkpoint_every=50,
      optimizer='rmsprop',
      learning_rate=1e-3,
      ema_decay=0.9,
      skip_grad_norm=100.0,
      entropy_penalty=0.01,
      generalisation_batch_size=8,
  )
  pop_dir, single_dir = str(tmp_path / 'population'), str(tmp_path / 'single')
  report = run(ExperimentConfig(workdir=pop_dir, seeds=SEEDS, **settings), task)
  single = run(ExperimentConfig(workdir=single_dir, seed=9, **settings), task)
  member = report['members'][1]
  assert member['seed'] == 9 and not member['failed']
  for label, results in single['results'].items():
    np.testing.assert_allclose(
        member['results'][label]['cost'], results['cost'], rtol=1e-4
    )
  config = ExperimentConfig.load(pop_dir)[0]
  _, member_params, step = loop.restore_evaluated_params(config, task, member=9)
  _, single_params, single_step = loop.restore_evaluated_params(
      ExperimentConfig.load(single_dir)[0], task
  )
  assert step == single_step == 200
  _allclose(member_params, single_params)
  # Evaluating the member alone gives its single run's report.
  alone = run(config, task, eval_only=True, member=9)
  for label, results in single['results'].items():
    np.testing.assert_allclose(
        alone['results'][label]['cost'], results['cost'], rtol=1e-4
    )
  assert os.path.exists(os.path.join(pop_dir, 'member_seed9', 'report.json'))
  # Written out as a single run's workdir, the member evaluates as that run.
  exported = str(tmp_path / 'exported')
  assert loop.export_member(config, task, 9, exported) == 9
  again = run(ExperimentConfig.load(exported)[0], task, eval_only=True)
  assert again['seed'] == 9 and again['step'] == 200
  np.testing.assert_allclose(
      again['results']['train']['cost'], single['results']['train']['cost'], rtol=1e-4
  )


def test_a_resumed_population_equals_an_uninterrupted_one(tmp_path):
  task = tiny_task()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  run(ExperimentConfig(workdir=straight, seeds=SEEDS, train_steps=20, **TINY), task)
  run(ExperimentConfig(workdir=resumed, seeds=SEEDS, train_steps=10, **TINY), task)
  run(ExperimentConfig(workdir=resumed, seeds=SEEDS, train_steps=20, **TINY), task)
  for seed in SEEDS:
    a = loop.restore_evaluated_params(
        ExperimentConfig.load(straight)[0], task, member=seed
    )
    b = loop.restore_evaluated_params(
        ExperimentConfig.load(resumed)[0], task, member=seed
    )
    assert a[2] == b[2] == 20
    jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
  with open(os.path.join(straight, 'metrics.jsonl')) as f:
    a = [json.loads(line) for line in f]
  with open(os.path.join(resumed, 'metrics.jsonl')) as f:
    b = [json.loads(line) for line in f]
  strip = lambda records: [
      {k: v for k, v in r.items() if k != 'sequences_per_second'} for r in records
  ]
  assert strip(a) == strip(b)


def _poisoning(monkeypatch, members_to_poison):
  """The runner's population starts with these members' parameters all NaN."""
  create = loop.create_population_state

  def poisoned(*args, **kwargs):
    state = create(*args, **kwargs)
    bad = jnp.zeros(len(SEEDS), bool).at[jnp.asarray(members_to_poison)].set(True)
    params = jax.tree.map(
        lambda x: jnp.where(bad.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x),
        state.params,
    )
    return state._replace(params=params)

  monkeypatch.setattr(loop, 'create_population_state', poisoned)


def test_a_failing_member_is_frozen_and_marked_while_the_others_train_on(
    tmp_path, monkeypatch, capsys
):
  _poisoning(monkeypatch, [1])
  workdir = str(tmp_path)
  report = run(
      ExperimentConfig(workdir=workdir, seeds=SEEDS, train_steps=20, **TINY), tiny_task()
  )
  assert (
      'Member seed 9: the training loss became nan at step 1' in capsys.readouterr().out
  )
  assert [m['failed'] for m in report['members']] == [False, True, False]
  assert report['summary']['failed'] == 1 and report['best_member'] in (4, 2)
  config = ExperimentConfig.load(workdir)[0]
  frozen = loop.restore_evaluated_params(config, tiny_task(), member=9)[1]
  assert all(np.isnan(leaf).all() for leaf in jax.tree.leaves(frozen['params']))
  trained = loop.restore_evaluated_params(config, tiny_task(), member=4)[1]
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(trained))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert all(r['failed'] == (r['member'] == 1) for r in records)


def test_the_run_stops_only_when_every_member_has_failed(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, seeds=SEEDS, train_steps=10, **TINY), tiny_task())
  good = loop.restore_evaluated_params(
      ExperimentConfig.load(workdir)[0], tiny_task(), member=2
  )[1]

  class Poisoned(CopyTask):  # every loss NaN from here on

    def sample_train(self, key, batch_size):
      batch = super().sample_train(key, batch_size)
      return batch._replace(inputs=batch.inputs * jnp.nan)

  with pytest.raises(NonFiniteLossError, match='every member.*checkpoint \\(step 10\\)'):
    run(
        ExperimentConfig(workdir=workdir, seeds=SEEDS, train_steps=20, **TINY),
        tiny_task(Poisoned),
    )
  config = ExperimentConfig.load(workdir)[0]
  step_kept = loop.restore_evaluated_params(config, tiny_task(), member=2)
  assert step_kept[2] == 10
  jax.tree.map(np.testing.assert_array_equal, step_kept[1], good)


def test_a_single_run_and_a_population_do_not_resume_each_other(tmp_path):
  single, pop = str(tmp_path / 'single'), str(tmp_path / 'pop')
  run(ExperimentConfig(workdir=single, train_steps=10, **TINY), tiny_task())
  run(ExperimentConfig(workdir=pop, seeds=SEEDS, train_steps=10, **TINY), tiny_task())
  with pytest.raises(
      WorkdirMismatchError,
      match=r'holds a single run .*as a population.*'
      r'Resume it with --population=1 --seed=0 ',
  ):
    run(
        ExperimentConfig(workdir=single, seeds=SEEDS, train_steps=20, **TINY), tiny_task()
    )
  with pytest.raises(
      WorkdirMismatchError,
      match='holds a population .*as a single run. Resume it with --seeds=',
  ):
    run(ExperimentConfig(workdir=pop, train_steps=20, **TINY), tiny_task())
  with pytest.raises(WorkdirMismatchError, match='seeds 4,9,2, not 4,9'):
    run(ExperimentConfig(workdir=pop, seeds=(4, 9), train_steps=20, **TINY), tiny_task())
  # Another model's workdir says so first, whatever its layout: no --population fixes it.
  with pytest.raises(WorkdirMismatchError, match='different model.*memory_size: 8 -> 6'):
    run(
        ExperimentConfig(
            workdir=single, seeds=SEEDS, train_steps=20, **dict(TINY, memory_size=6)
        ),
        tiny_task(),
    )
  with pytest.raises(ValueError, match='--member must be best or one of the seeds'):
    run(
        ExperimentConfig(workdir=pop, seeds=SEEDS, **TINY),
        tiny_task(),
        eval_only=True,
        member=5,
    )


@pytest.mark.slow  # two runs
def test_members_that_end_worse_than_their_best_evaluation_are_named(tmp_path, capsys):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, seeds=SEEDS, train_steps=10, **TINY), tiny_task())
  # Resumed at a rate that wrecks the parameters: every later evaluation is worse.
  capsys.readouterr()
  report = run(
      ExperimentConfig(
          workdir=workdir, seeds=SEEDS, train_steps=30, learning_rate=3.0, **TINY
      ),
      tiny_task(),
  )
  out = capsys.readouterr().out
  worse = [m for m in report['members'] if m['ended_worse_than_best']]
  assert worse and all(m['best']['step'] <= 10 for m in worse)
  assert 'Ended worse than their best evaluation' in out
  assert all(f'seed {m["seed"]} ' in out for m in worse)
  with open(os.path.join(workdir, 'report.json')) as f:
    assert [m['ended_worse_than_best'] for m in json.load(f)['members']] == [
        m['ended_worse_than_best'] for m in report['members']
    ]


def test_the_report_has_a_row_per_member_and_the_summary_over_them(tmp_path, capsys):
  report = run(
      ExperimentConfig(workdir=str(tmp_path), seeds=SEEDS, train_steps=10, **TINY),
      tiny_task(),
  )
  out = capsys.readouterr().out
  rows = [line.split('|')[0].strip() for line in out.splitlines() if '|' in line]
  assert rows[1:] == ['4', '9', '2', 'median', 'mean', 'worst']
  with open(tmp_path / 'report.json') as f:
    saved = json.load(f)
  assert saved['seeds'] == [4, 9, 2] and len(saved['members']) == 3
  errors = [m['results']['5']['bit_errors'] for m in saved['members']]
  assert saved['summary']['bit_errors']['5'] == dict(
      median=float(np.median(errors)),
      mean=pytest.approx(float(np.mean(errors))),
      worst=max(errors),
  )
  overall = [
      (
          not m['results']['train']['bit_errors'] < 0.1,
          sum(r['bit_errors'] for r in m['results'].values()),
          sum(r['cost'] for r in m['results'].values()),
      )
      for m in saved['members']
  ]
  assert (
      saved['best_member'] == SEEDS[overall.index(min(overall))] == report['best_member']
  )
  # --member=best is the member the report names, whichever that is.
  named = next(seed for seed in SEEDS if seed != saved['best_member'])
  saved['best_member'] = named
  with open(tmp_path / 'report.json', 'w') as f:
    json.dump(saved, f)
  config = ExperimentConfig.load(str(tmp_path))[0]
  assert loop.export_member(config, tiny_task(), 'best', str(tmp_path / 'out')) == named
  with open(tmp_path / 'metrics.jsonl') as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  assert sorted(r['seed'] for r in evals) == sorted(SEEDS)
