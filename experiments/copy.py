"""The copy task (paper Sec. 4.1): `python -m experiments.copy [--flags]`.

Trains on lengths 1-20, then evaluates lengths 10, 20, 30, 50 and 120 and writes the
report and figures into --workdir. Rerunning the same command resumes.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import CopyTask

flags.DEFINE_integer('min_length', 1, 'Shortest training sequence.')
flags.DEFINE_integer('max_length', 20, 'Longest training sequence.')
flags.DEFINE_list('eval_lengths', ['10', '20', '30', '50', '120'],
                  'Sequence lengths of the generalisation tests.')

FLAGS = flags.FLAGS

# Chosen by the sweep in BUILD_NOTES.md ("Copy: choosing the defaults"): the feed-forward
# controller converged and stayed converged where the LSTM controller was knocked back by
# gradient spikes; --controller=lstm gives the paper's other variant.
DEFAULTS = dict(batch_size=16, train_steps=4000, learning_rate=1e-3, optimizer='adam',
                lr_schedule='cosine', clip=10.0, clip_mode='global_norm', eval_every=100,
                checkpoint_every=250, eval_batch_size=256, controller='feedforward')
# The paper's LSTM baseline for copy: 3 x 256, RMSProp 3e-5 (Adam here, as for the NTM).
MODEL_DEFAULTS = dict(lstm=dict(lstm_features=256, lstm_layers=3))


def build_task() -> CopyTask:
  return CopyTask(min_length=FLAGS.min_length, max_length=FLAGS.max_length,
                  eval_lengths=common.int_list('eval_lengths'))


def main():
  common.main(build_task, 'copy', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
