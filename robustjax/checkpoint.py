"""Orbax checkpoints: the resumable train state and standalone variables.

Paths go through `robustjax.io.as_path` (etils.epath), so a workdir may be a
local folder or a bucket URL (`gs://...`); Orbax writes to either.

Orbax finalises a checkpoint only when it is complete, so a run killed
mid-save leaves the previous checkpoint intact. Storage can still damage a
finished checkpoint: a preempted write through gcsfuse or a full disk can
leave truncated tensor files. `Checkpointer.restore` therefore falls back to
the newest checkpoint that reads, moves the damaged one aside (to
`workdir/damaged_checkpoints/`, never deleted) and logs a warning naming it;
if none reads, it raises `DamagedCheckpointError` with one paragraph naming
the folder to remove. `load_variables` raises the same error, naming the
folder to delete so that the variables get rebuilt.

`save_variables` cannot leave variables that look saved but are not: it
writes into a temporary folder of its own beside the target, reads it back
and compares its `tree_checksum` with what it was given, and only then
renames it to the target (a save cut short leaves a `.<name>.tmp-*` folder,
removed by the next save, and no target). The checksum it returns lets
a caller (robustjax.compress.saved) record it in the marker it writes last
and check it on every load.
"""

import hashlib
import json
import re
import time
from typing import Any, Optional

import numpy as np

from absl import logging
import jax
import orbax.checkpoint as ocp

from robustjax import io
from robustjax import parallel

DAMAGED_DIR = "damaged_checkpoints"
# TensorStore reports damaged files as "<STATUS_CODE>: ..." (absl statuses).
_STATUS = re.compile(r"^[A-Z][A-Z_]+: ")


class DamagedCheckpointError(RuntimeError):
  """Saved state exists but cannot be read; `path` is what to remove.

  Attributes:
    path: the folder to remove so that the state gets rebuilt.
    reason: what is wrong, in a few words (the message says what to do).
  """

  def __init__(self, message: str, path: str, reason: str = ""):
    super().__init__(message)
    self.path = path
    self.reason = reason or message


def _brief(error: Exception) -> str:
  """The first line of an error (TensorStore appends whole specs)."""
  text = str(error).strip().splitlines()
  first = text[0] if text else ""
  first = first.split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {first[:200]}"


def _looks_incompatible(error: Exception) -> bool:
  """A model/state mismatch (as opposed to unreadable files)."""
  return (isinstance(error, (ValueError, KeyError, TypeError))
          and not isinstance(error, json.JSONDecodeError)
          and not _STATUS.match(str(error)))


def _must_propagate(error: Exception) -> bool:
  """Errors that say nothing about the files (out of memory, interrupts)."""
  return (isinstance(error, MemoryError)
          or "RESOURCE_EXHAUSTED" in str(error))


def _incompatible(path, error: Exception) -> ValueError:
  return ValueError(
      f"The checkpoint in {path} does not match this config's model/state "
      f"({type(error).__name__}: {str(error)[:300]}). It was probably written "
      "by a different architecture, width, number of classes or compression "
      "setting. Use a fresh --workdir, or restore the config that wrote it.")


class Checkpointer:
  """Keep-N manager of `TrainState` checkpoints under `workdir/checkpoints`.

  Attributes:
    directory: the checkpoints folder (`epath.Path`, local or URL).
  """

  def __init__(self, workdir: io.PathLike, keep: int = 2):
    self._workdir = io.as_path(workdir)
    self.directory = self._workdir / "checkpoints"
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

  def _restore_step(self, step, abstract_state):
    args = (ocp.args.StandardRestore() if abstract_state is None
            else ocp.args.StandardRestore(abstract_state))
    return self._manager.restore(step, args=args)

  def restore(self, abstract_state: Any = None,
              step: Optional[int] = None) -> Any:
    """Restores the newest readable checkpoint (or exactly `step`).

    A checkpoint whose files cannot be read is moved to
    `workdir/damaged_checkpoints/` with a warning naming its step, and the
    next older one is tried, so the run resumes from there.

    Args:
      abstract_state: the state's structure (`abstract(state)`), or None to
        restore the saved tree as it is.
      step: restore this step, with no fallback (default: the newest that
        reads).

    Returns:
      The restored state.

    Raises:
      FileNotFoundError: if there is no checkpoint.
      ValueError: if the checkpoints were written for another model/state.
      DamagedCheckpointError: if no checkpoint can be read.
    """
    steps = ([int(step)] if step is not None else
             sorted(self._manager.all_steps(), reverse=True))
    if not steps:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    failures = []
    for s in steps:
      try:
        state = self._restore_step(s, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        if _must_propagate(e):
          raise
        if not failures and _looks_incompatible(e):
          raise _incompatible(self.directory, e) from None
        failures.append((s, e))
        continue
      if failures:
        self._set_aside([f for f, _ in failures], s, failures)
      return state
    raise DamagedCheckpointError(
        f"No checkpoint in {self.directory} can be read: " + "; ".join(
            f"step {s}: {_brief(e)}" for s, e in failures) + ". The files "
        "are damaged (typically a save cut short by preemption or a full "
        "disk, or truncated through a gcsfuse mount). Remove the folder "
        f"{self.directory} to restart this training run from scratch (the "
        "rest of the workdir is kept), or use a fresh --workdir.",
        str(self.directory))

  def _set_aside(self, damaged_steps, restored_step, failures):
    """Moves unreadable step folders out of the manager's directory."""
    target_root = self._workdir / DAMAGED_DIR
    moved = []
    for step in damaged_steps:
      source = self.directory / str(step)
      target = target_root / f"step_{step}"
      if target.exists():
        target = target_root / f"step_{step}-{int(time.time())}"
      moved.append((step, source, target))
    if jax.process_index() == 0:
      target_root.mkdir(parents=True, exist_ok=True)
      for _, source, target in moved:
        if source.exists():
          source.rename(target)
    parallel.barrier("robustjax_checkpoint_set_aside")
    self._manager.reload()
    errors = dict(failures)
    for step, _, target in moved:
      logging.warning(
          "Checkpoint step %d in %s is damaged and cannot be read (%s); "
          "moved it to %s and resumed from step %d. Delete %s when you no "
          "longer need it.", step, self.directory, _brief(errors[step]),
          target, restored_step, target)

  def close(self):
    self._manager.close()


def _key_name(key) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def tree_checksum(tree: Any) -> str:
  """SHA-256 of a pytree's leaves: their paths, dtypes, shapes and bytes.

  Container types do not count (a tuple restored as a list sums the same),
  so a tree and its Orbax round trip have the same checksum.

  Args:
    tree: a pytree of arrays (on devices or on the host).

  Returns:
    The hex digest.
  """
  digest = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  for path, leaf in sorted(
      ("/".join(_key_name(k) for k in path), leaf) for path, leaf in leaves):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{path}|{value.dtype.str}|{value.shape}|".encode("utf-8"))
    digest.update(value.tobytes())
  return digest.hexdigest()


def save_variables(path: io.PathLike, tree: Any) -> str:
  """Saves a pytree (e.g. final or compressed variables), verified.

  The tree is written to `<parent>/.<name>.tmp-<checksum>/`, read back and
  compared with `tree_checksum(tree)`, then renamed to `path` (replacing a
  folder there), so `path` only ever holds variables that read back whole.

  Args:
    path: the target folder (local or URL).
    tree: the pytree.

  Returns:
    `tree_checksum(tree)`, for the caller's marker file.

  Raises:
    DamagedCheckpointError: the written files do not read back identical
      (storage fault); nothing is left at `path`.
  """
  path = io.as_path(path)
  checksum = tree_checksum(tree)
  tmp = path.parent / f".{path.name}.tmp-{checksum[:16]}"
  main = jax.process_index() == 0
  if main:
    for old in (tmp, path):  # Leftovers of an earlier, unfinished save.
      if old.exists():
        old.rmtree()
  parallel.barrier("robustjax_save_variables_clear")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp, tree, force=True)
  try:
    got = tree_checksum(load_variables(tmp))
  except (DamagedCheckpointError, FileNotFoundError) as e:
    got = f"unreadable ({e})"
  if got != checksum:
    if main and tmp.exists():
      tmp.rmtree()
    raise DamagedCheckpointError(
        f"The variables just saved to {tmp} do not read back as written "
        f"(checksum {got[:80]} != {checksum}): the storage lost or changed "
        "data (a full disk, a faulty mount). Nothing was kept; check the "
        "storage and run again.", str(path), "they did not read back")
  if main:
    tmp.rename(path)
  parallel.barrier("robustjax_save_variables_done")
  return checksum


def load_variables(path: io.PathLike, abstract_tree: Any = None,
                   owner: Optional[io.PathLike] = None) -> Any:
  """Loads a pytree saved by `save_variables` (optionally shape-checked).

  Args:
    path: the folder written by `save_variables` (local or URL).
    abstract_tree: expected structure (`abstract(tree)`), or None.
    owner: the folder to delete so that these variables get rebuilt, named
      in the error if they are damaged (default: `path`); e.g. a
      compressed model's folder.

  Returns:
    The pytree.

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: if the saved tree does not match `abstract_tree`.
    DamagedCheckpointError: if the files cannot be read.
  """
  path = io.as_path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"No saved variables at {path}.")
  owner = io.as_path(owner) if owner is not None else path
  with ocp.StandardCheckpointer() as ckpt:
    try:
      if abstract_tree is None:
        return ckpt.restore(path)
      return ckpt.restore(path, abstract_tree)
    except Exception as e:  # pylint: disable=broad-except
      if _must_propagate(e):
        raise
      if _looks_incompatible(e):
        raise _incompatible(path, e) from None
      raise DamagedCheckpointError(
          f"The saved variables in {path} cannot be read ({_brief(e)}): the "
          "files are damaged (typically a save cut short by preemption or a "
          "full disk, or truncated through a gcsfuse mount). Delete the "
          f"folder {owner} and run again to rebuild it.", str(owner),
          f"its variables cannot be read: {_brief(e)}") from None


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, for restores."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
