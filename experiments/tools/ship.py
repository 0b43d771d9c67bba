"""Copies a finished run into `trained/` and records the metrics its test checks.

`python -m experiments.tools.ship --workdir=runs/copy_ntm_seed0` copies the run's latest
checkpoint, config.json, metrics.jsonl and report.json into `trained/<task>_<model>/`,
then evaluates the copy with `--eval_only` on `--eval_batch_size` sequences per row and
writes the results to `expected.json`, with each sequence's bit errors and cost. With
`--checkpoint=best` it ships the checkpoint of the run's best evaluation instead
(`<workdir>/best`), and report.json is that checkpoint's evaluation on the run's own
number of sequences, not the run's last report. `tests/test_trained.py` re-evaluates every
shipped run and fails when its metrics move: a change that breaks the cell's maths fails
CI. After a deliberate change that moves them, `python -m experiments.tools.ship
--workdir=trained/copy_ntm --record_only` re-records a shipped run's `expected.json`.
"""

import json
import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The finished run to ship.', required=True)
flags.DEFINE_string('destination', 'trained', 'Where shipped runs live.')
flags.DEFINE_enum(
    'checkpoint',
    'latest',
    ('latest', 'best'),
    'Ship the latest checkpoint, or the best: the state of the evaluation '
    'with the lowest cost during training.',
)
flags.DEFINE_integer(
    'eval_batch_size',
    64,
    'Sequences per evaluated row in expected.json (kept small for CI).',
)
flags.DEFINE_string(
    'member',
    None,
    'For a population (--seeds): ship this member, a seed of the '
    'population or best (the best member its report names: the lowest '
    'cost over every evaluated difficulty), as the single run of its seed.',
)
flags.DEFINE_bool(
    'record_only',
    False,
    'Only re-evaluate the already shipped run --workdir=trained/<task>_<model> '
    'and rewrite its expected.json in place.',
)

RUN_FILES = ('config.json', 'metrics.jsonl', 'report.json')


def evaluate(directory: str, eval_batch_size: int | None) -> dict:
  """Evaluates a run directory's latest checkpoint, in a scratch copy (eval writes files).

  Returns the report; eval_batch_size None keeps the run's own numbers of sequences,
  a number evaluates every row (each generalisation difficulty too) on that many.
  """
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import run

  with tempfile.TemporaryDirectory() as scratch:
    workdir = os.path.join(scratch, 'run')
    shutil.copytree(directory, workdir)
    overrides = dict(plots=False)
    if eval_batch_size is not None:
      overrides.update(eval_batch_size=eval_batch_size, generalisation_batch_size=0)
    config, task = ExperimentConfig.load(workdir, **overrides)
    return run(config, task, eval_only=True)


def record_expected(target: str, eval_batch_size: int) -> None:
  """Writes `<target>/expected.json`: the shipped run's metrics, per row and per sequence."""
  from ntm_jax.training import regression

  expected = dict(
      eval_batch_size=eval_batch_size,
      results=evaluate(target, eval_batch_size)['results'],
      per_sequence=regression.evaluate_per_sequence(target, eval_batch_size),
  )
  with open(os.path.join(target, 'expected.json'), 'w') as f:
    json.dump(expected, f, indent=1)


def ship(
    workdir: str,
    destination: str,
    eval_batch_size: int,
    checkpoint: str = 'latest',
    member: int | str | None = None,
) -> str:
  """Copies the run's latest (or best) checkpoint and records; returns the shipped dir.

  For a population, `member` (a seed or 'best') is first written out as the single run
  of its seed (`loop.export_member`), and that run is shipped.
  """
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import checkpointing
  from ntm_jax.training import loop

  config, task = ExperimentConfig.load(workdir)
  if config.seeds or member is not None:
    if member is None:
      raise ValueError(
          f'--workdir={workdir} holds a population (seeds '
          f'{",".join(map(str, config.seeds))}): choose a member with '
          '--member=<seed> or --member=best.'
      )
    with tempfile.TemporaryDirectory() as scratch:
      single = os.path.join(scratch, 'run')
      loop.export_member(config, task, member, single, checkpoint)
      with open(os.path.join(single, 'report.json'), 'w') as f:
        json.dump(evaluate(single, None), f, indent=2)
      return ship(single, destination, eval_batch_size)
  checkpointer = checkpointing.open_saved(workdir, checkpoint)
  try:
    step = checkpointer.latest_step()
  finally:
    checkpointer.close()
  target = os.path.join(destination, f'{task.name}_{config.model}')
  shutil.rmtree(target, ignore_errors=True)
  shutil.copytree(
      os.path.join(checkpointer.directory, str(step)),
      os.path.join(target, 'checkpoints', str(step)),
  )
  for name in RUN_FILES:  # report.json is missing if the run was stopped before the end
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copy(os.path.join(workdir, name), target)
  if checkpoint == 'best':  # the run's report is of its last step: evaluate this one
    with open(os.path.join(target, 'report.json'), 'w') as f:
      json.dump(evaluate(target, None), f, indent=2)
  record_expected(target, eval_batch_size)
  return target


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}.')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every step at INFO
  from ntm_jax.training import backend

  backend.tune_cpu_compiler()  # the compiler flags the tests and runners use
  if FLAGS.record_only and FLAGS['checkpoint'].present:
    sys.exit(
        'error: --record_only re-evaluates the checkpoint already shipped in '
        '--workdir; --checkpoint does not apply to it.'
    )
  try:
    if FLAGS.record_only:
      record_expected(FLAGS.workdir, FLAGS.eval_batch_size)
    else:
      member = FLAGS.member
      if member is not None and member != 'best':
        if not member.isdigit():
          sys.exit(
              f'error: --member must be best or a seed of the population; got '
              f'{member!r}.'
          )
        member = int(member)
      target = ship(
          FLAGS.workdir,
          FLAGS.destination,
          FLAGS.eval_batch_size,
          FLAGS.checkpoint,
          member,
      )
  except FileNotFoundError as error:
    sys.exit(f'error: --workdir={FLAGS.workdir} is not a finished run: {error}')
  except ValueError as error:
    sys.exit(f'error: {error}')
  print(
      f'Recorded {FLAGS.workdir}/expected.json'
      if FLAGS.record_only
      else f'Shipped {target}'
  )


if __name__ == '__main__':
  app.run(main)
