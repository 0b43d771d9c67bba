"""Dynamic N-grams (paper Sec. 4.4): `python -m experiments.ngrams [--flags]`.

Trains two seeds (--seed and --seed+1; --population=1, one run) to predict 200 bits
drawn from a random 6-gram table per sequence and names the member with the lowest
cost above the optimal Bayesian estimator's, which the report gives on the same
evaluation sequences.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import DynamicNGramsTask

flags.DEFINE_integer(
    'sequence_length', 200, 'Scored predictions per sequence.', module_name='task'
)

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100, lr 3e-5; LSTM baseline 3 x 128; cost
# over 1000 validation sequences. Write heads that start advancing, restarts judged
# against the optimum and two members on a CPU: BUILD_NOTES.md, "Decisions".
DEFAULTS = dict(
    batch_size=1,
    train_steps=96000,
    learning_rate=3e-4,
    optimizer='adam',
    lr_schedule='cosine',
    clip=10.0,
    eval_every=8000,
    checkpoint_every=8000,
    log_every=1000,
    eval_batch_size=1000,
    restart_after=24000,
    write_advance_bias=4.0,
)
POPULATION = 2
MODEL_DEFAULTS = dict(
    lstm=dict(lstm_features=128, lstm_layers=3, restart_after=0, write_advance_bias=0.0)
)
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> DynamicNGramsTask:
  return DynamicNGramsTask(
      length=FLAGS.sequence_length, eval_lengths=(FLAGS.sequence_length,)
  )


def main():
  common.main(build_task, 'ngrams', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
