"""The configuration of a training run: a frozen dataclass that validates itself.

Experiments parse their flags into an `ExperimentConfig`; library code never reads flags.
Every error names the field (which is also the flag's name) and what is allowed.

The record is flat, one field per flag, which is also the format of a run's config.json
(so every recorded run still resumes); the parts of the program read it through its
nested views: `config.ntm` (the cell's keyword arguments), `config.lstm`,
`config.optimiser` and `config.loop`.
"""

import dataclasses
import json
import os

from ntm_jax.tasks import Task
from ntm_jax.tasks import make_task

MODELS = ('ntm', 'lstm')
OPTIMIZERS = ('adam', 'rmsprop', 'sgd')
CLIP_MODES = ('global_norm', 'elementwise', 'none')
LR_SCHEDULES = ('constant', 'cosine')
ACCELERATORS = ('cpu', 'gpu', 'tpu')
DTYPES = ('float32', 'bfloat16')
# Which checkpoint an evaluation-only run restores (training.run's `checkpoint`).
CHECKPOINTS = ('latest', 'best')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimiser's part of a config (`optim.make_optimizer`); fields as there."""

  name: str = 'adam'
  learning_rate: float = 1e-3
  lr_schedule: str = 'constant'
  train_steps: int = 1000  # the cosine schedule's length
  clip: float = 10.0
  clip_mode: str = 'global_norm'
  skip_grad_norm: float = 0.0


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """The training loop's part of a config: how long, and how often it logs, saves and
  evaluates (fields as in ExperimentConfig)."""

  train_steps: int
  batch_size: int
  log_every: int
  checkpoint_every: int
  eval_every: int
  eval_batch_size: int
  target_bit_errors: float
  restart_after: int
  plots: bool


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run needs besides the task.

  Attributes (each is also a flag of the experiment runners):
    workdir: where checkpoints, metrics, the report and figures go.
    seed: the base PRNG seed; parameters and every batch derive from it.
    seeds: () for a single run of `seed`; else train a population, one member per seed,
      member k being the run of seeds[k] (population.py); `seed` is then unused.
    model: 'ntm' or 'lstm' (the paper's LSTM baseline).
    batch_size, train_steps: sequences per step and the number of steps.
    learning_rate, optimizer: 'adam', 'rmsprop' (Graves 2013: centered, decay 0.95,
      momentum 0.9, eps 1e-4 inside the square root) or 'sgd'.
    lr_schedule: 'constant', or 'cosine' decay from learning_rate to a tenth of it at
      train_steps.
    clip, clip_mode: gradient clipping threshold, by 'global_norm', 'elementwise'
      (the paper's [-clip, clip]) or 'none'.
    skip_grad_norm: 0, or skip every step whose gradient (before clipping) has a global
      norm above this or not finite: no update and no change to the optimiser's state,
      as if the batch had not been drawn. Clipping bounds a spike's update but not its
      direction; this drops the rare steps whose gradient is orders of magnitude above
      the rest (docs/history, "Priority sort: averaging the parameters and skipping
      gradient spikes").
    ema_decay: 0, or also keep an exponential moving average of the parameters,
      average <- ema_decay * average + (1 - ema_decay) * parameters after every step,
      and evaluate, report, plot and ship the average (the parameters themselves are
      evaluated too, as `unaveraged`). It smooths out the noise of small-batch updates
      (docs/history, the same section).
    carry_grad_clip: NTM only: 0, or clip each entry of the gradient that flows back
      into a step through the cell's carry into [-carry_grad_clip, carry_grad_clip]
      (models.NTM.carry_grad_clip). The forward pass is unchanged. The gradient spikes of
      late priority-sort training grow through the carry, the memory most (docs/history,
      "Priority sort: where the gradient spikes come from").
    write_advance_bias: NTM only: 0, or start every write head writing one slot after
      another (factory.advancing_write_heads): its gate's bias starts at -this and its +1
      shift's at +this. Training can change both.
    eval_every, checkpoint_every, log_every: in training steps.
    eval_batch_size: sequences of the training mix in each evaluation, and of every
      generalisation difficulty in the report unless generalisation_batch_size is set.
    generalisation_batch_size: 0, or sequences per generalisation difficulty in the
      report (evaluation.make_evaluator): where models fail by rare, wholly wrong sequences
      (copy's slips at length 120, about 480 bit errors each) one among 256 is already
      1.9 bit errors per sequence, so "below 1" needs more sequences to be measured.
    target_bit_errors: stop early once the evaluation on training difficulties has
      fewer bit errors per sequence than this (0 disables early stopping).
    restart_after: 0, or restart from a fresh initialisation every attempt that has
      gone this many steps without an evaluation on the training mix that shows it
      learning (evaluation.learning: below 1 bit error per sequence, or within 15%
      above a reference predictor's cost; it never learned, or collapsed back onto a
      plateau): new parameters (from the seed and the step) and a new optimiser state,
      while the step count and the data stream go on. Some initialisations settle on a
      plateau they do not leave within any budget (copy: 1 of the 44 seeds measured); a
      run's report lists its restarts and why.
    stop_when_generalising: stop at the first evaluation at which the run has
      converged (fewer than evaluation.CONVERGED_BIT_ERRORS bit errors per sequence on
      the training mix) and also makes fewer than evaluation.GENERALISING_BIT_ERRORS on
      evaluation.CHECK_SEQUENCES sequences of the task's hardest difficulty, its own
      check sequences (never the reported ones): a state checked on many more
      sequences than the report's. A population stops each member so (member k stops as
      run k does) and ends when all have stopped. Off in every default: on copy it did
      not make length 120 more reliable (docs/RESULTS.md).
    entropy_penalty: NTM only: add this many bits of cost per bit of entropy of the
      heads' weightings (summed over heads and steps) to the training cost, which favours
      sharp addressing; 0 trains on the paper's cost alone. Logged costs are the paper's.
    memory_size, word_size, num_heads, controller, controller_features,
      controller_layers, shift_range, memory_init, memory_stddev: the `NTMCell` fields
      (num_heads read heads and as many write heads).
    lstm_features, lstm_layers: the LSTM baseline's sizes.
    dtype: 'float32' or 'bfloat16' for the dense computations.
    plots: write PNG figures into the workdir.
    remat_chunk: what the NTM's backward pass keeps (models.NTM): 1, each step's carry
      only, recomputing the step (the default: on a CPU as fast at batch 1, faster
      beyond); 0, every intermediate; K > 1, the carry every K steps (bounded memory for
      long sequences and big memories).
    data_parallel: split each batch over all devices (a mesh over the batch axis);
      batch_size must be divisible by the number of devices. On the CPU the runners
      make one device per core.
    micro_batch_size: 0, or go through each device's batch in micro-batches of this
      size, summing their gradients: the same update in less memory.
    members_at_once: with seeds: k > 0 steps a device's members k at a time, holding
      fewer intermediates; 0 chooses: all at once (vmap) on an accelerator, 4 at a time
      on a CPU (population.make_population_step).
  """

  workdir: str
  seed: int = 0
  seeds: tuple[int, ...] = ()
  model: str = 'ntm'
  batch_size: int = 32
  train_steps: int = 1000
  learning_rate: float = 1e-3
  optimizer: str = 'adam'
  lr_schedule: str = 'constant'
  clip: float = 10.0
  clip_mode: str = 'global_norm'
  skip_grad_norm: float = 0.0
  ema_decay: float = 0.0
  carry_grad_clip: float = 0.0
  write_advance_bias: float = 0.0
  eval_every: int = 250
  checkpoint_every: int = 250
  log_every: int = 50
  eval_batch_size: int = 128
  generalisation_batch_size: int = 0
  target_bit_errors: float = 0.0
  restart_after: int = 0
  stop_when_generalising: bool = False
  entropy_penalty: float = 0.0
  memory_size: int = 128
  word_size: int = 20
  num_heads: int = 1
  controller: str = 'lstm'
  controller_features: int = 100
  controller_layers: int = 1
  shift_range: int = 1
  memory_init: str = 'constant'
  memory_stddev: float = 0.01
  lstm_features: int = 256
  lstm_layers: int = 3
  dtype: str = 'float32'
  plots: bool = True
  remat_chunk: int = 1
  data_parallel: bool = False
  micro_batch_size: int = 0
  members_at_once: int = 0

  def __post_init__(self):
    if not self.workdir:
      raise ValueError('workdir must be a directory path, got an empty string.')
    object.__setattr__(self, 'seeds', tuple(self.seeds))  # config.json holds a list
    if any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds
    ) or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'seeds must be distinct integers >= 0, got {self.seeds!r}.')
    positive = (
        'batch_size',
        'train_steps',
        'eval_every',
        'checkpoint_every',
        'log_every',
        'eval_batch_size',
        'memory_size',
        'word_size',
        'num_heads',
        'controller_features',
        'controller_layers',
        'lstm_features',
        'lstm_layers',
    )
    for name in positive:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}.')
    if (
        isinstance(self.remat_chunk, bool)
        or not isinstance(self.remat_chunk, int)
        or self.remat_chunk < 0
    ):
      raise ValueError(f'remat_chunk must be an integer >= 0, got {self.remat_chunk!r}.')
    if (
        isinstance(self.generalisation_batch_size, bool)
        or not isinstance(self.generalisation_batch_size, int)
        or self.generalisation_batch_size < 0
    ):
      raise ValueError(
          'generalisation_batch_size must be an integer >= 0, got '
          f'{self.generalisation_batch_size!r}.'
      )
    if (
        isinstance(self.restart_after, bool)
        or not isinstance(self.restart_after, int)
        or self.restart_after < 0
    ):
      raise ValueError(
          f'restart_after must be an integer >= 0, got {self.restart_after!r}.'
      )
    if not isinstance(self.members_at_once, int) or self.members_at_once < 0:
      raise ValueError(
          f'members_at_once must be an integer >= 0, got {self.members_at_once!r}.'
      )
    if not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 0:
      raise ValueError(
          f'micro_batch_size must be an integer >= 0, got {self.micro_batch_size!r}.'
      )
    if self.micro_batch_size and self.batch_size % self.micro_batch_size:
      raise ValueError(
          f'micro_batch_size={self.micro_batch_size} must divide '
          f'batch_size={self.batch_size}.'
      )
    if not isinstance(self.shift_range, int) or self.shift_range < 0:
      raise ValueError(f'shift_range must be an integer >= 0, got {self.shift_range!r}.')
    if 2 * self.shift_range + 1 > self.memory_size:
      raise ValueError(
          f'shift_range={self.shift_range} needs 2 * shift_range + 1 <= '
          f'memory_size={self.memory_size}.'
      )
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate!r}.')
    if not self.clip > 0:
      raise ValueError(f'clip must be > 0, got {self.clip!r}.')
    if not 0 <= self.ema_decay < 1:
      raise ValueError(f'ema_decay must be in [0, 1), got {self.ema_decay!r}.')
    if self.target_bit_errors < 0:
      raise ValueError(f'target_bit_errors must be >= 0, got {self.target_bit_errors!r}.')
    for name in (
        'memory_stddev',
        'entropy_penalty',
        'skip_grad_norm',
        'carry_grad_clip',
        'write_advance_bias',
    ):
      if not 0 <= getattr(self, name) < float('inf'):
        raise ValueError(
            f'{name} must be a finite number >= 0, got {getattr(self, name)!r}.'
        )
    if self.entropy_penalty and (self.model != 'ntm' or self.remat_chunk > 1):
      raise ValueError(
          f'entropy_penalty={self.entropy_penalty} needs model=ntm and '
          f'remat_chunk 0 or 1 (got model={self.model!r}, '
          f'remat_chunk={self.remat_chunk}); use entropy_penalty=0 otherwise.'
      )
    for name in ('carry_grad_clip', 'write_advance_bias'):
      if getattr(self, name) and self.model != 'ntm':
        raise ValueError(
            f'{name}={getattr(self, name)} needs model=ntm (got '
            f'model={self.model!r}); use {name}=0 otherwise.'
        )
    if self.write_advance_bias and self.shift_range < 1:
      raise ValueError(
          f'write_advance_bias={self.write_advance_bias} needs shift_range '
          f'>= 1 (a +1 shift), got {self.shift_range}.'
      )
    choices = dict(
        model=MODELS,
        optimizer=OPTIMIZERS,
        clip_mode=CLIP_MODES,
        lr_schedule=LR_SCHEDULES,
        controller=('lstm', 'feedforward'),
        memory_init=('constant', 'learned', 'random'),
        dtype=DTYPES,
    )
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(
            f'{name} must be one of {", ".join(allowed)}; got {getattr(self, name)!r}.'
        )

  @property
  def ntm(self) -> dict:
    """The `NTMCell` keyword arguments besides `features` and `dtype`: the cell is built
    as `NTMCell(features=..., dtype=..., **config.ntm)`."""
    return dict(
        memory_size=self.memory_size,
        word_size=self.word_size,
        num_read_heads=self.num_heads,
        num_write_heads=self.num_heads,
        controller=self.controller,
        controller_features=self.controller_features,
        controller_layers=self.controller_layers,
        shift_range=self.shift_range,
        memory_init=self.memory_init,
        memory_stddev=self.memory_stddev,
    )

  @property
  def lstm(self) -> dict:
    """The `models.LSTMBaseline` keyword arguments besides `features` and `dtype`."""
    return dict(hidden_features=self.lstm_features, num_layers=self.lstm_layers)

  @property
  def optimiser(self) -> 'OptimizerConfig':
    return OptimizerConfig(
        name=self.optimizer,
        learning_rate=self.learning_rate,
        lr_schedule=self.lr_schedule,
        train_steps=self.train_steps,
        clip=self.clip,
        clip_mode=self.clip_mode,
        skip_grad_norm=self.skip_grad_norm,
    )

  @property
  def loop(self) -> 'LoopConfig':
    return LoopConfig(
        train_steps=self.train_steps,
        batch_size=self.batch_size,
        log_every=self.log_every,
        checkpoint_every=self.checkpoint_every,
        eval_every=self.eval_every,
        eval_batch_size=self.eval_batch_size,
        target_bit_errors=self.target_bit_errors,
        restart_after=self.restart_after,
        plots=self.plots,
    )

  @property
  def difficulty_batch_size(self) -> int:
    """Sequences per generalisation difficulty in the report."""
    return self.generalisation_batch_size or self.eval_batch_size

  def replace(self, **changes) -> 'ExperimentConfig':
    return dataclasses.replace(self, **changes)

  @classmethod
  def load(cls, workdir: str, **changes) -> tuple['ExperimentConfig', Task]:
    """The config a run recorded in `<workdir>/config.json`, and the task it trained on.

    The workdir is set to `workdir` (a run's directory may have been moved); `changes`
    override other fields, e.g. a smaller eval_batch_size. A config.json from before the
    task's settings were recorded gives the task's defaults.
    """
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    task = make_task(saved['task'], saved.get('task_settings'))
    fields = {field.name for field in dataclasses.fields(cls)}
    values = {name: value for name, value in saved.items() if name in fields}
    values.update(changes, workdir=workdir)
    return cls(**values), task

  def model_fields(self) -> dict:
    """The fields that fix the parameters' shapes: a checkpoint needs them unchanged."""
    names = ['model', 'dtype']
    if self.model == 'ntm':
      names += [
          'memory_size',
          'word_size',
          'num_heads',
          'controller',
          'controller_features',
          'controller_layers',
          'shift_range',
          'memory_init',
      ]
    else:
      names += ['lstm_features', 'lstm_layers']
    return {name: getattr(self, name) for name in names}
