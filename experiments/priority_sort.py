"""Priority sort (paper Sec. 4.5): `python -m experiments.priority_sort [--flags]`.

20 random 8-bit vectors with priorities in [-1, 1]; the target is the 16 highest, highest
priority first.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import PrioritySortTask

flags.DEFINE_integer('num_inputs', 20, 'Vectors per training sequence.')
flags.DEFINE_integer('num_outputs', 16, 'Highest-priority vectors to output.')

FLAGS = flags.FLAGS

# The paper: NTM 5 heads, LSTM controller of 2 x 100, lr 3e-5; LSTM baseline 3 x 128.
DEFAULTS = dict(batch_size=16, train_steps=5000, learning_rate=1e-3, optimizer='adam',
                lr_schedule='cosine', clip=10.0, eval_every=250, checkpoint_every=250,
                eval_batch_size=256, num_heads=5, controller_layers=2)
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=128, lstm_layers=3))


def build_task() -> PrioritySortTask:
  return PrioritySortTask(num_inputs=FLAGS.num_inputs, num_outputs=FLAGS.num_outputs,
                          eval_inputs=(FLAGS.num_inputs,))


def main():
  common.main(build_task, 'priority_sort', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
