"""Associative recall (paper Sec. 4.3): `python -m experiments.associative_recall`.

Trains on episodes of 2-6 items of three 6-bit vectors, then evaluates longer lists (the
paper's Fig. 11: up to 20 items).
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import AssociativeRecallTask

flags.DEFINE_integer('max_items', 6, 'Most items per training episode.')
flags.DEFINE_list('eval_items', ['6', '10', '15', '20'],
                  'Item counts of the generalisation tests.')

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100; LSTM baseline 3 x 256.
DEFAULTS = dict(batch_size=16, train_steps=5000, learning_rate=1e-3, optimizer='adam',
                lr_schedule='cosine', clip=10.0, eval_every=250, checkpoint_every=250,
                eval_batch_size=256)
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=256, lstm_layers=3))


def build_task() -> AssociativeRecallTask:
  return AssociativeRecallTask(max_items=FLAGS.max_items,
                               eval_items=common.int_list('eval_items'))


def main():
  common.main(build_task, 'associative_recall', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
