"""The interface every task implements, after DeepMind's chomsky-hierarchy tasks.

A task samples batches on the device from a PRNG key, for a given batch size and (for
evaluation) a fixed difficulty, and says how wide its inputs and outputs are. Sequences of
varying length are padded to a fixed shape and masked, so that training never recompiles.

Notation: b = batch, T = padded time steps, I = input channels, O = output channels.
"""

import abc
import inspect
from typing import Any, NamedTuple

import jax

# A difficulty is an int (a length, a number of items) or a tuple of ints (length, repeats).
Difficulty = int | tuple[int, ...]


class Batch(NamedTuple):
  """A batch of padded sequences.

  Attributes:
    inputs: (b, T, I) float32 inputs.
    targets: (b, T, O) float32 targets in [0, 1].
    mask: (b, T) float32, 1 where a step's output is scored, 0 elsewhere.
  """

  inputs: jax.Array
  targets: jax.Array
  mask: jax.Array


class Task(abc.ABC):
  """A sequence task scored by binary cross-entropy on sigmoid outputs."""

  name: str
  # What the task's results are judged by, which also picks a population's best member:
  # bit errors per sequence, or the cost where bit errors say little (N-grams, whose
  # optimum still errs; priority sort, scored against the paper's cost).
  judged_by: str = 'bit_errors'

  @property
  @abc.abstractmethod
  def input_size(self) -> int:
    """I, the number of input channels."""

  @property
  @abc.abstractmethod
  def output_size(self) -> int:
    """O, the number of output channels."""

  @abc.abstractmethod
  def sample_train(self, key: jax.Array, batch_size: int) -> Batch:
    """A training batch: difficulties drawn from the training range, padded alike."""

  @abc.abstractmethod
  def sample_eval(self, key: jax.Array, batch_size: int, difficulty: Difficulty) -> Batch:
    """A batch in which every sequence has the given difficulty (e.g. its length)."""

  @property
  @abc.abstractmethod
  def eval_difficulties(self) -> tuple[Difficulty, ...]:
    """The difficulties of the generalisation tests (the paper's figures)."""

  @property
  def difficulty_name(self) -> str:
    """What a difficulty is, for reports ('length', 'items', ...)."""
    return 'length'

  def difficulty_label(self, difficulty: Difficulty) -> str:
    """A difficulty as it appears in reports and file names."""
    if isinstance(difficulty, tuple):
      return 'x'.join(str(part) for part in difficulty)
    return str(difficulty)

  def example_difficulties(self) -> tuple[Difficulty, ...]:
    """Difficulties drawn in the memory/weighting figures: one trained, one harder."""
    return (self.eval_difficulties[0], self.eval_difficulties[-1])

  def settings(self) -> dict[str, Any]:
    """The constructor's arguments, which rebuild this task: `type(task)(**settings)`.

    A run records them in its config.json, so that resuming, evaluating or shipping it
    meets the task it trained on. Every subclass keeps each argument as an attribute of
    the same name, with or without a leading underscore.
    """
    names = list(inspect.signature(type(self).__init__).parameters)[1:]  # after self
    return {
        name: (
            getattr(self, f'_{name}')
            if hasattr(self, f'_{name}')
            else getattr(self, name)
        )
        for name in names
    }

  def reference_cost(self, batch: Batch) -> jax.Array | None:
    """(b,) the cost in bits per sequence of a reference predictor, if the task has one."""
    del batch
    return None
