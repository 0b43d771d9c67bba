"""Slips (wholly wrong sequences) among many check sequences of a run's hardest difficulty:
`python -m experiments.tools.slips runs/copy_ntm_seed0 runs/copy_ntm_seed1 ...`.

A converged copy model can be right on all 256 reported length-120 sequences and still
start its output one slot off on rare others, every output then its neighbour's; the
rate of such slips, not the 256-sequence figure, is what a recipe changes
(BUILD_NOTES.md, "Open problems"). For each run (each member of a population) this
evaluates the state `--eval_only` evaluates on `--sequences` of the run's own check
sequences (`Keys.check_batch`, never the reported ones) and counts the slips (more than
`--wrong_fraction` of a sequence's scored bits wrong) and the sequences with any error.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_integer('sequences', 4096, 'Check sequences per run.')
flags.DEFINE_float(
    'wrong_fraction',
    0.1,
    'A sequence with more than this fraction of its '
    'scored bits wrong counts as a slip (one off, about half its bits '
    "wrong; a copy model's other errors are a few bits).",
)


def count_slips(model, params, batch, wrong_fraction: float) -> dict:
  """The number of slips in `batch` (sequences with more than `wrong_fraction` of their
  scored bits wrong), of sequences with any error, and the worst sequence's bit errors.

  The batch is evaluated at once, as the runner evaluates its sets: random starting
  memories are drawn for the whole batch, so a part of it would get others."""
  import jax

  from ntm_jax.training import metrics

  @jax.jit
  def errors_and_bits(params, batch):
    logits = model.apply(params, batch.inputs)
    scored = batch.mask.sum(axis=1) * batch.targets.shape[-1]
    return metrics.bit_errors_per_sequence(logits, batch), scored

  errors, scored = (np.asarray(x) for x in errors_and_bits(params, batch))
  return dict(
      sequences=len(errors),
      slips=int(np.sum(errors > wrong_fraction * scored)),
      any_error=int(np.sum(errors > 0)),
      worst=float(errors.max()),
  )


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    sys.exit('error: name one or more run workdirs, e.g. runs/copy_ntm_seed0.')
  if FLAGS.sequences < 1:
    sys.exit(f'error: --sequences must be an integer >= 1; got {FLAGS.sequences}.')
  if not 0 <= FLAGS.wrong_fraction < 1:
    sys.exit(f'error: --wrong_fraction must be in [0, 1); got {FLAGS.wrong_fraction}.')
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  from ntm_jax import training

  training.select_accelerator('cpu')
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import evaluation
  from ntm_jax.training import loop
  from ntm_jax.training.train_state import Keys

  counts = []
  for workdir in workdirs:
    if not os.path.exists(os.path.join(workdir, 'config.json')):
      sys.exit(f'error: {workdir} has no config.json; name a run workdir.')
    config, task = ExperimentConfig.load(workdir)
    if not task.eval_difficulties:
      sys.exit(f'error: {workdir}: its task has no generalisation difficulty to check.')
    hardest = task.eval_difficulties[-1]
    for seed in config.seeds or (config.seed,):
      try:
        model, params, step = loop.restore_evaluated_params(
            config, task, member=seed if config.seeds else None
        )
      except FileNotFoundError as error:
        sys.exit(f'error: {workdir} has no checkpoint to check ({error})')
      batch = evaluation.eval_set(task, Keys(seed), hardest, FLAGS.sequences, check=True)
      result = count_slips(model, params, batch, FLAGS.wrong_fraction)
      counts.append(result['slips'])
      label = os.path.basename(os.path.normpath(workdir)) + (
          f'/seed{seed}' if config.seeds else ''
      )
      print(
          f'{label}: step {step}, {task.difficulty_label(hardest)}: '
          f'{result["slips"]} slips in {result["sequences"]} sequences, '
          f'{result["any_error"]} with any error, worst {result["worst"]:.0f} bit '
          f'errors',
          flush=True,
      )
  if len(counts) > 1:
    print(
        f'{len(counts)} runs: slips median {np.median(counts):g}, most '
        f'{max(counts)}, none on {counts.count(0)}'
    )


if __name__ == '__main__':
  app.run(main)
