"""Dynamic N-grams (paper Sec. 4.4): `python -m experiments.ngrams [--flags]`.

Trains two seeds (--seed and --seed+1; --population=1, one run) to predict 200 bits
drawn from a random 6-gram table per sequence and names the member with the lowest
cost above the optimal Bayesian estimator's, which the report gives on the same
evaluation sequences.
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
# "Dynamic N-grams"). Some initialisations stay on a plateau (29-32 bits above the
# optimum at 24,000 sequences) past 40,000 and end 3-8 above, where learning ones are
# 4-14 above by 24,000: an attempt not within 15% (20 bits) by then starts afresh
# (evaluation.learning). A restart resets the learning-rate schedule, so an attempt
# that starts at 24,000 and learns ends as a first attempt is at 72,000: 1.5-1.9 above.
# The LSTM baseline's recorded results were measured without restarts.
DEFAULTS = dict(batch_size=1, train_steps=96000, learning_rate=3e-4, optimizer='adam',
                lr_schedule='cosine', clip=10.0, eval_every=8000, checkpoint_every=8000,
                log_every=1000, eval_batch_size=1000, restart_after=24000)
# About half of all attempts stall, and a run whose attempts all stall, or all but a
# short last one, ends far above the optimum (2104: 24 bits; 2100: 4.4); 8 of 12 fresh
# runs end within 2 bits. Two members, one per core of a 2-core CPU, take about one
# run's wall time there (one run leaves the second core mostly idle: 858-902 s against
# 992 s), and the better is named: a seed fails only if both members do. RESULTS.md,
# "Dynamic N-grams".
POPULATION = 2
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=128, lstm_layers=3, restart_after=0))
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> DynamicNGramsTask:
  return DynamicNGramsTask(length=FLAGS.sequence_length,
                           eval_lengths=(FLAGS.sequence_length,))


def main():
  common.main(build_task, 'ngrams', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
