"""Orbax checkpoints of the training state, in one place (the Orbax API moves).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
run killed during a save still restores from the last complete checkpoint.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

KEEP_LATEST = 3


class Checkpointer:
  """Saves and restores a training-state pytree under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers=ocp.StandardCheckpointHandler(),  # lets saved_keys read metadata
        options=ocp.CheckpointManagerOptions(
            create=True,
            preservation_policy=ocp.checkpoint_managers.LatestN(KEEP_LATEST)))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves `state` as `step`, unless that step is already saved."""
    if step == self.latest_step():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def saved_keys(self, step: int | None = None) -> set[str]:
    """The top-level keys of the state saved at `step` (the latest if None)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    return set(self._manager.item_metadata(step).keys())

  def restore(self, like: Any, step: int | None = None) -> Any:
    """Restores the checkpoint at `step` (the latest if None) into `like`'s structure."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    """Waits for saves in flight to complete."""
    self._manager.wait_until_finished()
    self._manager.close()
