"""Orbax checkpoints: the resumable train state and standalone variables.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a run killed mid-save leaves the previous checkpoint intact; the
next run resumes from the newest complete one.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def _incompatible(path: str, error: Exception) -> ValueError:
  return ValueError(
      f"The checkpoint in {path} does not match this config's model/state "
      f"({type(error).__name__}: {str(error)[:300]}). It was probably written "
      "by a different architecture, width, number of classes or compression "
      "setting. Use a fresh --workdir, or restore the config that wrote it.")


class Checkpointer:
  """Keep-N manager of `TrainState` checkpoints under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=False))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self._manager.save(int(step), args=ocp.args.StandardSave(state),
                       force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    step = self.latest_step() if step is None else step
    try:
      return self._manager.restore(
          step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise _incompatible(self.directory, e) from None

  def close(self):
    self._manager.close()


def save_variables(path: str, tree: Any) -> None:
  """Saves a pytree (e.g. final or compressed variables) atomically."""
  path = os.path.abspath(path)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, tree, force=True)


def load_variables(path: str, abstract_tree: Any = None) -> Any:
  """Loads a pytree saved by `save_variables` (optionally shape-checked)."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No saved variables at {path}.")
  with ocp.StandardCheckpointer() as ckpt:
    try:
      if abstract_tree is None:
        return ckpt.restore(path)
      return ckpt.restore(path, abstract_tree)
    except (ValueError, KeyError, TypeError) as e:
      raise _incompatible(path, e) from None


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, for restores."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


