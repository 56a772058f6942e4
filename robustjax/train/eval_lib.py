"""Accuracy of any model (float, pruned, quantized) on a loaded split."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data.registry import Split

_COMPILED = {}


def _correct_fn(apply_fn: Callable):
  """Jitted (variables, images, labels, mask) -> #correct, cached per fn."""
  key = id(apply_fn)
  if key not in _COMPILED:
    def correct(variables, images, labels, mask):
      logits = apply_fn(variables, pipeline.to_float(images))
      return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
    _COMPILED[key] = (apply_fn, jax.jit(correct))  # Keep apply_fn alive.
  return _COMPILED[key][1]


def accuracy(apply_fn: Callable, variables, split: Split, batch_size: int,
             mesh: Optional[jax.sharding.Mesh] = None) -> float:
  """Top-1 accuracy of `apply_fn(variables, images)` on `split`.

  Args:
    apply_fn: `logits = apply_fn(variables, images_in_0_1)`, inference mode.
    variables: the model's variables.
    split: a loaded split (uint8 images).
    batch_size: global evaluation batch; padded batches keep one shape.
    mesh: device mesh for data-parallel evaluation (default: all devices).

  Returns:
    Fraction of correctly classified examples, in [0, 1].
  """
  mesh = mesh or parallel.make_mesh()
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  correct_fn = _correct_fn(apply_fn)
  total = 0.0
  for images, labels, mask in pipeline.eval_batches(split, batch_size):
    batch = parallel.shard_global_batch(mesh, images, labels, mask)
    total += float(correct_fn(variables, *batch))
  return total / len(split)


def predictions(apply_fn: Callable, variables, split: Split,
                batch_size: int) -> np.ndarray:
  """Predicted labels for every example of `split` (host numpy)."""
  fn = jax.jit(lambda v, x: jnp.argmax(apply_fn(v, pipeline.to_float(x)), -1))
  out = [np.asarray(fn(variables, images))[:int(mask.sum())]
         for images, _, mask in pipeline.eval_batches(split, batch_size)]
  return np.concatenate(out)
