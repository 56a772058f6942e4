"""Saved models: trained runs and compressed models on disk.

A compressed (or original) model is a folder with `variables/` (Orbax) and
`compression.json` (its metadata), written last so that its presence marks
a complete model. `apply_fn_for(metadata)` rebuilds the one calling
convention `logits = apply_fn(variables, images)` for any of them. The folder
may be local or in a bucket (`gs://...`; robustjax.io).

A save cannot look finished when it is not: the variables are written to a
temporary folder of their own, read back and compared with their checksum
before they become `variables/` (robustjax.checkpoint.save_variables), and
only then is `compression.json` written, holding that checksum. `load`
checks everything a model needs (readable JSON metadata, a `variables/`
folder that reads, the checksum) and raises `DamagedModelError` naming the
folder and the problem otherwise; `set_aside` moves such a folder to
`<folder>.damaged-N` so that it can be rebuilt (the study runner does both).
"""

import json
import os
from typing import Any, Callable, Dict, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from robustjax import checkpoint
from robustjax import io
from robustjax import models
from robustjax import parallel
from robustjax.compress import quantization
from robustjax.models import factory

METADATA = "compression.json"
VARIABLES = "variables"
DAMAGED = ".damaged-"  # `<folder>.damaged-N`: a damaged model set aside.


class DamagedModelError(checkpoint.DamagedCheckpointError):
  """A saved model folder that is marked done but cannot be used."""

  def __init__(self, workdir: str, reason: str):
    super().__init__(
        f"The saved model {workdir} is damaged: {reason}. Delete the folder "
        "and run again to rebuild it (a study moves it aside and rebuilds it "
        "by itself).", str(workdir), reason)


class Compressed(NamedTuple):
  """A model ready to evaluate: `logits = apply_fn(variables, images)`."""
  apply_fn: Callable[..., Any]
  variables: Any
  metadata: Dict[str, Any]


def apply_fn_for(metadata: Dict[str, Any], dtype=None):
  """`apply_fn(variables, images)` of a saved model's metadata (computing
  in `dtype`, e.g. bfloat16, where given)."""
  q = metadata.get("quantization")
  ops = {} if dtype is None else {"dtype": dtype}
  if q:
    ops = dict(conv=quantization.qconv(q["weight_bits"], q["act_bits"],
                                       q["act_calibration"]),
               dense=quantization.qdense(q["weight_bits"], q["act_bits"],
                                         q["act_calibration"]))
  return models.inference_fn(factory.build_from_spec(metadata["model"],
                                                     **ops))


def to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def save(workdir: str, variables, metadata: Dict[str, Any]) -> None:
  """Writes `variables/` (verified) then `compression.json` (marks it done).

  Args:
    workdir: the model's folder.
    variables: its variables.
    metadata: its metadata; stored with the variables' checksum added.
  """
  io.makedirs(workdir)
  # Orbax saves are collective (every process calls); metadata: process 0.
  checksum = checkpoint.save_variables(os.path.join(workdir, VARIABLES),
                                       variables)
  if parallel.is_main_process():
    io.write_json(os.path.join(workdir, METADATA),
                  {**metadata, "checksum": checksum})


def is_done(workdir) -> bool:
  """True if `workdir` holds a model marked as saved (it may be damaged)."""
  return bool(workdir) and io.exists(os.path.join(workdir, METADATA))


def load(workdir: str) -> Compressed:
  """A model saved by `save`, checked whole.

  Args:
    workdir: the model's folder.

  Returns:
    The model.

  Raises:
    DamagedModelError: `compression.json` is not readable JSON metadata,
      `variables/` is missing or unreadable, or the variables differ from
      the checksum recorded when they were saved.
    ValueError: the variables do not fit the model the metadata names.
  """
  meta_path = os.path.join(workdir, METADATA)
  try:
    metadata = io.read_json(meta_path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DamagedModelError(workdir, f"{METADATA} is not JSON ({e})") from None
  if not isinstance(metadata, dict) or not isinstance(
      metadata.get("model"), dict):
    raise DamagedModelError(workdir, f"{METADATA} names no model")
  try:
    variables = checkpoint.load_variables(os.path.join(workdir, VARIABLES),
                                          owner=workdir)
  except FileNotFoundError:
    raise DamagedModelError(workdir, f"it has no {VARIABLES}/ folder"
                            ) from None
  except checkpoint.DamagedCheckpointError as e:
    raise DamagedModelError(workdir, e.reason) from None
  expected = metadata.get("checksum")
  if expected and checkpoint.tree_checksum(variables) != expected:
    raise DamagedModelError(
        workdir, f"its {VARIABLES}/ differ from the checksum in {METADATA}")
  try:
    apply_fn = apply_fn_for(metadata)
  except (KeyError, TypeError, ValueError) as e:
    raise DamagedModelError(
        workdir, f"{METADATA} does not describe a model ({e!r})") from None
  return Compressed(apply_fn, variables, metadata)


def set_aside(workdir: str) -> str:
  """Moves a damaged model folder to `<folder>.damaged-N`; returns that path.

  N is the first number not taken, so earlier damaged copies are kept.
  Process 0 moves it; every process returns the same path.

  Args:
    workdir: the model's folder.
  """
  source = io.as_path(workdir)
  n = 1
  while io.exists(f"{os.fspath(source)}{DAMAGED}{n}"):
    n += 1
  target = f"{os.fspath(source)}{DAMAGED}{n}"
  parallel.barrier("robustjax_saved_set_aside_name")
  if parallel.is_main_process():
    source.rename(target)
  parallel.barrier("robustjax_saved_set_aside")
  return target


def restore_trained(train_workdir: str) -> Dict[str, Any]:
  """{"params", "batch_stats"} of the newest checkpoint of a training run."""
  directory = io.as_path(train_workdir) / "checkpoints"
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(
        f"No training checkpoint in {directory}. Train the model first "
        "(python launch/train.py --config=... --workdir=...) and point "
        "the launcher at that workdir.")
  state = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return {"params": state["params"], "batch_stats": state["batch_stats"]}
