"""The copy task (paper Sec. 4.1): `python -m experiments.copy [--flags]`.

Trains four seeds (--seed to --seed+3; --population=1, one run) on lengths 1-20, then
evaluates lengths 10, 20, 30, 50 and 120, names the best member and writes the report
and figures into --workdir. Rerunning the same command resumes.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import CopyTask

flags.DEFINE_integer('min_length', 1, 'Shortest training sequence.', module_name='task')
flags.DEFINE_integer('max_length', 20, 'Longest training sequence.', module_name='task')
flags.DEFINE_list(
    'eval_lengths',
    ['10', '20', '30', '50', '120'],
    'Sequence lengths of the generalisation tests.',
    module_name='task',
)

FLAGS = flags.FLAGS

# The paper's recipe: one sequence per update, Graves' RMSProp at 1e-4, entries clipped
# to [-10, 10]. For length 120 a random memory per sequence and an entropy penalty keep
# the read head parked through the input, restarts leave the memorising plateau, and four
# members of 64,000 sequences hide rare slips: BUILD_NOTES.md, "Decisions".
DEFAULTS = dict(
    batch_size=1,
    train_steps=64000,
    learning_rate=1e-4,
    optimizer='rmsprop',
    lr_schedule='cosine',
    clip=10.0,
    clip_mode='elementwise',
    eval_every=1600,
    checkpoint_every=4000,
    log_every=400,
    eval_batch_size=256,
    generalisation_batch_size=2048,
    controller='lstm',
    memory_init='random',
    memory_stddev=0.3,
    entropy_penalty=0.005,
    restart_after=16000,
)
POPULATION = 4
# The paper's LSTM baseline for copy: 3 x 256, here in batches of 16 with Adam 1e-3.
MODEL_DEFAULTS = dict(lstm=common.lstm_baseline_in_batches(256, 64000, eval_every=100))
common.define_flags(DEFAULTS, MODEL_DEFAULTS, POPULATION)


def build_task() -> CopyTask:
  return CopyTask(
      min_length=FLAGS.min_length,
      max_length=FLAGS.max_length,
      eval_lengths=common.int_list('eval_lengths'),
  )


def main():
  common.main(build_task, 'copy', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
