"""Saved models: trained runs and compressed models on disk.

A compressed (or original) model is a folder with `variables/` (Orbax) and
`compression.json` (its metadata), written last so that its presence marks
a complete model. `apply_fn_for(metadata)` rebuilds the one calling
convention `logits = apply_fn(variables, images)` for any of them. The folder
may be local or in a bucket (`gs://...`; robustjax.io).
"""

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


class Compressed(NamedTuple):
  """A model ready to evaluate: `logits = apply_fn(variables, images)`."""
  apply_fn: Callable[..., Any]
  variables: Any
  metadata: Dict[str, Any]


def apply_fn_for(metadata: Dict[str, Any]):
  """`apply_fn(variables, images)` of a saved model's metadata."""
  q = metadata.get("quantization")
  ops = {}
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
  """Writes `variables/` then `compression.json` (last: marks it done)."""
  io.makedirs(workdir)
  # Orbax saves are collective (every process calls); metadata: process 0.
  checkpoint.save_variables(os.path.join(workdir, VARIABLES), variables)
  if parallel.is_main_process():
    io.write_json(os.path.join(workdir, METADATA), metadata)


def is_done(workdir) -> bool:
  return bool(workdir) and io.exists(os.path.join(workdir, METADATA))


def load(workdir: str) -> Compressed:
  """A model saved by `save`."""
  metadata = io.read_json(os.path.join(workdir, METADATA))
  variables = checkpoint.load_variables(os.path.join(workdir, VARIABLES),
                                        owner=workdir)
  return Compressed(apply_fn_for(metadata), variables, metadata)


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
