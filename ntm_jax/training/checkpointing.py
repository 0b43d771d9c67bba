"""Orbax checkpoints of the training state, in one place (the Orbax API moves).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
run killed during a save still restores from the last complete checkpoint.
"""

from collections.abc import Callable
import gc
import logging
import math
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import multihost as orbax_multihost

KEEP_LATEST = 3


def _save_in_background() -> bool:
  """Whether saves finish in Orbax's background thread: in one process only.

  With several processes, a save's finalisation runs barriers that are device
  collectives; from a background thread they interleave with the training step's
  collectives in an order that differs between processes, and the CPU collectives abort
  or hang. Saving in the main thread keeps every process's collectives in one order.
  """
  return jax.process_count() == 1


_BARRIER_COUNTS: dict[str, int] = {}


def _unique_barriers() -> Callable | None:
  """With several processes, Orbax's barriers with a count in each name: Orbax reuses
  some names at every save, and the coordination service refuses a name whose previous
  barrier it still holds ("already ongoing"). Every process passes the same barriers in
  the same order, so the counts (shared by all checkpointers) agree."""
  if jax.process_count() == 1:
    return None
  barrier = orbax_multihost.get_barrier_sync_fn()

  def unique(*, key: str, timeout_ms: int) -> None:
    _BARRIER_COUNTS[key] = _BARRIER_COUNTS.get(key, -1) + 1
    barrier(key=f'{key}.{_BARRIER_COUNTS[key]}', timeout_ms=timeout_ms)

  return unique


def _quiet_callbacks_onto_closed_loops() -> None:
  """Stops Python printing the tracebacks of callbacks onto a closed event loop.

  Orbax reads a checkpoint's arrays concurrently in an event loop of its own and closes
  that loop when the first read fails. The tensorstore reads still in flight complete
  later, from tensorstore's threads, onto the closed loop, and each raises "Event loop
  is closed" into `sys.unraisablehook`, which prints a traceback on stderr, often dozens
  of them. They say nothing the failure did not: the damaged checkpoint's one line
  does. Every other unraisable exception still reaches the previous hook. Installed
  before the first read that may fail, once, for the rest of the process: the
  stragglers arrive at no set time.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'quiets_closed_loops', False):
    return

  def hook(unraisable):
    if (
        unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == 'Event loop is closed'
    ):
      return
    previous(unraisable)

  hook.quiets_closed_loops = True
  sys.unraisablehook = hook


class Checkpointer:
  """Saves and restores a training-state pytree under `<workdir>/checkpoints`.

  It keeps the KEEP_LATEST latest checkpoints, which is what resuming needs.
  """

  subdirectory = 'checkpoints'

  def __init__(self, workdir: str):
    self.directory = os.path.join(os.path.abspath(workdir), self.subdirectory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers=ocp.StandardCheckpointHandler(),  # lets saved_keys read metadata
        options=self._options(),
    )

  def _options(self) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        create=True,
        preservation_policy=ocp.checkpoint_managers.LatestN(KEEP_LATEST),
        enable_async_checkpointing=_save_in_background(),
        async_options=ocp.AsyncOptions(barrier_sync_fn=_unique_barriers()),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves `state` as `step`, unless that step is already saved."""
    if step == self.latest_step():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def saved_keys(self, step: int | None = None, path: tuple[str, ...] = ()) -> set[str]:
    """The keys of the state saved at `step` (the latest readable one if None): its
    top-level keys, or those of the subtree at `path`."""

    def keys(candidate):
      metadata = self._manager.item_metadata(candidate)
      for key in path:
        metadata = metadata[key]
      return set(metadata.keys())

    return keys(step) if step is not None else self._newest_readable(keys)

  def restore(self, like: Any, step: int | None = None) -> Any:
    """Restores the checkpoint at `step` (the latest if None) into `like`'s structure.

    With step None, a latest checkpoint that cannot be read while an older one can (a
    truncated or corrupted file: a full disk, a bad copy) is moved aside into
    `<workdir>/damaged/`, never deleted, with a line saying which and why, and the
    newest one that restores is returned. If none restores, the latest one's error is
    raised: then the fault is not in the files but in `like` (other sizes).
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)

    def read(candidate):
      return self._manager.restore(candidate, args=ocp.args.StandardRestore(abstract))

    return read(step) if step is not None else self._newest_readable(read)

  def _newest_readable(self, read: Callable[[int], Any]) -> Any:
    """`read` of the newest checkpoint it succeeds on; those it failed on before are set
    aside. Raises the newest one's error if it fails on all."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    failures = []
    _quiet_callbacks_onto_closed_loops()
    # A damaged checkpoint fails many of Orbax's concurrent reads at once; the first
    # error is raised, and asyncio would print the others as "never retrieved".
    asyncio_log = logging.getLogger('asyncio')
    for candidate in steps:
      level, asyncio_log.level = asyncio_log.level, logging.CRITICAL + 1
      try:
        result = read(candidate)
      except Exception as error:  # noqa: BLE001 - any reading fault; re-raised below
        failures.append((candidate, error))
        continue
      finally:
        gc.collect()  # the failed reads' futures report (silently) now
        asyncio_log.level = level
      for damaged, error in failures:
        self._set_aside(damaged, error)
      return result
    raise failures[0][1]

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves the unreadable checkpoint at `step` into `<workdir>/damaged/` and says so."""
    workdir = os.path.dirname(self.directory)
    target = os.path.join(workdir, 'damaged', f'{self.subdirectory}-{step}')
    while os.path.exists(target):
      target += '+'
    os.makedirs(os.path.dirname(target), exist_ok=True)
    self._manager.wait_until_finished()
    os.rename(os.path.join(self.directory, str(step)), target)
    reason = ' '.join(str(error).split())[:200]
    print(
        f'Warning: the checkpoint at step {step} in {self.directory} cannot be read '
        f'({type(error).__name__}: {reason}); moved it to {target} and restored the '
        'newest one that reads.',
        flush=True,
    )
    self._manager.reload()

  def close(self) -> None:
    """Waits for saves in flight to complete."""
    self._manager.wait_until_finished()
    self._manager.close()


class BestCheckpointer(Checkpointer):
  """The one checkpoint with the lowest evaluation cost so far, under `<workdir>/best`.

  A run that diverges late (a gradient spike that wrecks the learned addressing) goes on
  saving its latest checkpoints over the good ones; this one keeps the best state seen by
  an evaluation. Its "latest" step, which `restore` and `saved_keys` default to, is the
  best one. The cost is stored beside the checkpoint (Orbax's metrics), so a resumed run
  compares against it.
  """

  subdirectory = 'best'

  def __init__(self, workdir: str):
    super().__init__(workdir)
    step = self.latest_step()
    # Kept here too: a save in flight has not written its metrics yet.
    self._cost = math.inf if step is None else float(self._manager.metrics(step)['cost'])

  def _options(self) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        create=True,
        max_to_keep=1,
        best_fn=lambda metrics: metrics['cost'],
        best_mode='min',
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=_save_in_background(),
    )

  def latest_step(self) -> int | None:
    return self._manager.best_step()

  def best_cost(self) -> float:
    """The saved checkpoint's evaluation cost; infinity when there is none."""
    return self._cost

  def save(self, step: int, state: Any, cost: float) -> bool:
    """Saves `state` if `cost` is below the best so far; returns whether it did.

    A step that is already the best is kept as it is: a resumed run can evaluate it again,
    and on other hardware its cost may differ in the last bits.
    """
    if step == self.latest_step() or not cost < self.best_cost():  # also refuses NaN
      return False
    self._manager.save(
        step, args=ocp.args.StandardSave(state), metrics={'cost': cost}, force=True
    )
    self._cost = cost
    return True


def open_saved(workdir: str, checkpoint: str = 'latest') -> Checkpointer:
  """A run's saved checkpoints, to read: its latest ones (checkpoint='latest') or best/.

  Raises ValueError for another `checkpoint`, and FileNotFoundError, naming the
  directory, where it is missing (checked before Orbax opens it, which would create it)
  or holds no finished checkpoint. The caller closes what it gets.
  """
  sources = {'latest': Checkpointer, 'best': BestCheckpointer}
  if checkpoint not in sources:
    raise ValueError(
        f'checkpoint must be one of {", ".join(sources)}; got ' f'{checkpoint!r}.'
    )
  source_class = sources[checkpoint]
  directory = os.path.join(os.path.abspath(workdir), source_class.subdirectory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'{directory} does not exist.')
  source = source_class(workdir)
  if source.latest_step() is None:
    source.close()
    raise FileNotFoundError(f'{directory} holds no finished checkpoint.')
  return source
