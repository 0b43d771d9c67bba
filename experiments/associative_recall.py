"""Associative recall (paper Sec. 4.3): `python -m experiments.associative_recall`.

Trains on episodes of 2-6 items of three 6-bit vectors, then evaluates longer lists (the
paper's Fig. 11: up to 20 items).
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import AssociativeRecallTask

flags.DEFINE_integer(
    'max_items', 6, 'Most items per training episode.', module_name='task'
)
flags.DEFINE_list(
    'eval_items',
    ['6', '10', '15', '20'],
    'Item counts of the generalisation tests.',
    module_name='task',
)

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100; LSTM baseline 3 x 256. Here its
# feed-forward variant (4 heads, 256 units), restarts off the "last item" plateau, five
# attempts' worth of episodes and two members on a CPU: BUILD_NOTES.md, "Decisions".
DEFAULTS = dict(
    batch_size=1,
    train_steps=80000,
    learning_rate=3e-4,
    optimizer='adam',
    lr_schedule='cosine',
    clip=10.0,
    eval_every=1000,
    checkpoint_every=5000,
    log_every=500,
    eval_batch_size=256,
    controller='feedforward',
    num_heads=4,
    controller_features=256,
    restart_after=16000,
)
POPULATION = 2
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=256, lstm_layers=3, restart_after=0))
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> AssociativeRecallTask:
  return AssociativeRecallTask(
      max_items=FLAGS.max_items, eval_items=common.int_list('eval_items')
  )


def main():
  common.main(build_task, 'associative_recall', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
