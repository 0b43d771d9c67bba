"""The repeat copy task (paper Sec. 4.2): `python -m experiments.repeat_copy [--flags]`.

Trains on sequences of 1-10 vectors repeated 1-10 times, then evaluates longer sequences
and more repeats (the paper's Fig. 8-9).
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import RepeatCopyTask

flags.DEFINE_integer('max_length', 10, 'Longest training sequence.', module_name='task')
flags.DEFINE_integer('max_repeats', 10, 'Most repeats in training.', module_name='task')
flags.DEFINE_list('eval_difficulties', ['10x10', '10x20', '20x10', '20x20'],
                  'Generalisation tests as LENGTHxREPEATS.', module_name='task')

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100, trained as the paper did: one sequence
# per update, Graves' RMSProp at 1e-4, each gradient entry clipped to [-10, 10]. All 5
# seeds converged with it (24,000-52,000 sequences), where Adam 1e-3 at batch 16 left the
# initial plateau for 1 of 5 (docs/history, "Repeat copy"). A seed can stay on that
# plateau for good (2 of 26 fresh seeds: 48 and 77 bit errors per sequence after
# 120,000), and converged seeds generalise to longer sequences by the draw (20 x 10:
# 1.85-741 bit errors per sequence): on a CPU two members, one per core, take one run's
# wall time (about 550 s), and the one with the fewest bit errors over every evaluated
# difficulty is named (docs/RESULTS.md). LSTM baseline: 3 x 512, the same number of
# sequences in batches of 16 with Adam (about 6 sequences per second on this CPU).
DEFAULTS = dict(batch_size=1, train_steps=120000, learning_rate=1e-4, optimizer='rmsprop',
                lr_schedule='cosine', clip=10.0, clip_mode='elementwise', eval_every=4000,
                checkpoint_every=4000, log_every=1000, eval_batch_size=128)
POPULATION = 2
MODEL_DEFAULTS = dict(lstm=common.lstm_baseline_in_batches(512, 120000, eval_every=250))
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> RepeatCopyTask:
  try:
    pairs = tuple(tuple(int(part) for part in text.split('x'))
                  for text in FLAGS.eval_difficulties)
  except ValueError:
    raise ValueError('--eval_difficulties must look like 10x10,20x10 (LENGTHxREPEATS), '
                     f'got {FLAGS.eval_difficulties}.') from None
  return RepeatCopyTask(max_length=FLAGS.max_length, max_repeats=FLAGS.max_repeats,
                        eval_difficulties=pairs)


def main():
  common.main(build_task, 'repeat_copy', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
