"""The repeat copy task (paper Sec. 4.2): `python -m experiments.repeat_copy [--flags]`.

Trains on sequences of 1-10 vectors repeated 1-10 times, then evaluates longer sequences
and more repeats (the paper's Fig. 8-9).
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import RepeatCopyTask

flags.DEFINE_integer('max_length', 10, 'Longest training sequence.', module_name='task')
flags.DEFINE_integer('max_repeats', 10, 'Most repeats in training.', module_name='task')
flags.DEFINE_list(
    'eval_difficulties',
    ['10x10', '10x20', '20x10', '20x20'],
    'Generalisation tests as LENGTHxREPEATS.',
    module_name='task',
)

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100, one sequence per update, Graves'
# RMSProp at 1e-4, entries clipped to [-10, 10]. Two members on a CPU, since a seed can
# stay on the initial plateau and generalisation varies: BUILD_NOTES.md, "Decisions".
DEFAULTS = dict(
    batch_size=1,
    train_steps=120000,
    learning_rate=1e-4,
    optimizer='rmsprop',
    lr_schedule='cosine',
    clip=10.0,
    clip_mode='elementwise',
    eval_every=4000,
    checkpoint_every=4000,
    log_every=1000,
    eval_batch_size=128,
)
POPULATION = 2
MODEL_DEFAULTS = dict(lstm=common.lstm_baseline_in_batches(512, 120000, eval_every=250))
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> RepeatCopyTask:
  try:
    pairs = tuple(
        tuple(int(part) for part in text.split('x')) for text in FLAGS.eval_difficulties
    )
  except ValueError:
    raise ValueError(
        '--eval_difficulties must look like 10x10,20x10 (LENGTHxREPEATS), '
        f'got {FLAGS.eval_difficulties}.'
    ) from None
  return RepeatCopyTask(
      max_length=FLAGS.max_length, max_repeats=FLAGS.max_repeats, eval_difficulties=pairs
  )


def main():
  common.main(build_task, 'repeat_copy', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
