"""Dynamic N-grams (paper Sec. 4.4): `python -m experiments.ngrams [--flags]`.

Predicts 200 bits drawn from a random 6-gram table per sequence; the report gives the
cost of the optimal Bayesian estimator on the same evaluation sequences.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import DynamicNGramsTask

flags.DEFINE_integer('sequence_length', 200, 'Scored predictions per sequence.',
                     module_name='task')

FLAGS = flags.FLAGS

# The paper: NTM 1 head, LSTM controller of 100, lr 3e-5; LSTM baseline 3 x 128. The
# paper's cost is over 1000 validation sequences, hence eval_batch_size. One sequence per
# update, as in the paper: at batch 16 the NTM was still 42 bits above the optimum after
# 32,000 sequences; at batch 1 it was 3.3 bits above at that point (docs/history,
# "Dynamic N-grams"). Some initialisations stay on the LSTM's plateau (28-47 bits above
# the optimum) past 40,000 sequences and end 3-8 above, where learning ones are 3-5
# above by 32,000: an attempt not within 7.5% (10 bits) by then starts afresh
# (evaluation.learning), and 128,000 sequences leave a restarted attempt 96,000 of its
# own. The LSTM baseline never comes that close: it keeps one attempt of 96,000.
DEFAULTS = dict(batch_size=1, train_steps=128000, learning_rate=3e-4, optimizer='adam',
                lr_schedule='cosine', clip=10.0, eval_every=8000, checkpoint_every=8000,
                log_every=1000, eval_batch_size=1000, restart_after=32000)
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=128, lstm_layers=3, train_steps=96000,
                                restart_after=0))
common.define_flags(DEFAULTS, MODEL_DEFAULTS)


def build_task() -> DynamicNGramsTask:
  return DynamicNGramsTask(length=FLAGS.sequence_length,
                           eval_lengths=(FLAGS.sequence_length,))


def main():
  common.main(build_task, 'ngrams', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
