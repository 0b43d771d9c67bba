"""Priority sort (paper Sec. 4.5): `python -m experiments.priority_sort [--flags]`.

20 random 8-bit vectors with priorities in [-1, 1]; the target is the 16 highest, highest
priority first.
"""

from absl import flags

from experiments import common
from ntm_jax.tasks import PrioritySortTask

flags.DEFINE_integer(
    'num_inputs', 20, 'Vectors per training sequence.', module_name='task'
)
flags.DEFINE_integer(
    'num_outputs', 16, 'Highest-priority vectors to output.', module_name='task'
)
flags.DEFINE_float(
    'min_priority_span',
    2.0,
    'Training only: each sequence draws its '
    'priorities from its own interval in [-1, 1], at least this wide '
    "(log-uniform up to 2); 2, the default, is the paper's [-1, 1].",
    module_name='task',
)

FLAGS = flags.FLAGS

# The paper: NTM 5 heads, LSTM controller of 2 x 100; LSTM baseline 3 x 128. Write heads
# that start advancing (a search needs each input in its own slot) and the late-training
# guards (skipped spikes, the carry's gradient clipped, an average of the parameters):
# BUILD_NOTES.md, "Decisions".
TRAINING_SEQUENCES = 700000
DEFAULTS = dict(
    batch_size=1,
    train_steps=TRAINING_SEQUENCES,
    learning_rate=1e-4,
    optimizer='rmsprop',
    lr_schedule='cosine',
    clip=10.0,
    clip_mode='elementwise',
    skip_grad_norm=1e5,
    carry_grad_clip=100.0,
    ema_decay=0.9999,
    eval_every=5000,
    checkpoint_every=5000,
    log_every=1000,
    eval_batch_size=256,
    num_heads=5,
    controller_layers=2,
    memory_init='learned',
    write_advance_bias=4.0,
)
MODEL_DEFAULTS = dict(
    lstm=common.lstm_baseline_in_batches(128, TRAINING_SEQUENCES, eval_every=250)
)
common.define_flags(DEFAULTS, MODEL_DEFAULTS)


def build_task() -> PrioritySortTask:
  return PrioritySortTask(
      num_inputs=FLAGS.num_inputs,
      num_outputs=FLAGS.num_outputs,
      eval_inputs=(FLAGS.num_inputs,),
      min_priority_span=FLAGS.min_priority_span,
  )


def main():
  common.main(build_task, 'priority_sort', DEFAULTS, MODEL_DEFAULTS)


if __name__ == '__main__':
  common.run(main)
