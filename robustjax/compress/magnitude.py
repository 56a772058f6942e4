"""Magnitude ranking: which weights (or filters) a sparsity removes.

The numeric core of `pruning.magnitude_masks`, on flat lists of leaves:
`k = round(s * n)` (round half up; exact in float64 for a Python sparsity,
traced otherwise), the `k` lowest scores removed by a stable sort (ties
broken by position, so equal weights never make the count drift), scores
of weights removed before ranked below every kept one (monotone gradual
pruning). Unstructured scores are the weights' magnitudes; channel scores
are each output filter's L1 or L2 norm, divided by the fan-in (L1) or its
square root (L2) under a global scope so that layers of different sizes
compare fairly. The ranking runs as one jitted program per architecture and
setting.
"""

import functools
import math
from typing import Any, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np


def num_pruned(sparsity, n: int):
  """k = round(s * n), half up; exact for Python floats, traced otherwise."""
  if isinstance(sparsity, (int, float, np.floating)):
    if not 0.0 <= float(sparsity) <= 1.0:
      raise ValueError(f"Sparsity must be in [0, 1], got {sparsity}.")
    return int(math.floor(float(sparsity) * n + 0.5))
  k = jnp.floor(jnp.asarray(sparsity, jnp.float32) * n + 0.5)
  return jnp.clip(k, 0, n).astype(jnp.int32)


def _keep_lowest_pruned(scores: jax.Array, k) -> jax.Array:
  """Boolean keep-mask of `scores` (1-D) removing exactly the k lowest."""
  n = scores.shape[0]
  order = jnp.argsort(scores, stable=True)
  ranks = jnp.zeros((n,), jnp.int32).at[order].set(
      jnp.arange(n, dtype=jnp.int32))
  return ranks >= k


def _filter_scores(kernel: jax.Array, norm: str,
                   normalise: bool) -> jax.Array:
  """One score per output channel (last axis) of a conv/dense kernel."""
  w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)
  fan_in = w.shape[0]
  if norm == "l1":
    s = jnp.sum(jnp.abs(w), axis=0)
    return s / fan_in if normalise else s
  s = jnp.sqrt(jnp.sum(w * w, axis=0))
  return s / math.sqrt(fan_in) if normalise else s


def masks(leaves: Sequence[Any], prunable: Sequence[bool],
          sparsity: Union[float, jax.Array], *,
          prev: Optional[Sequence[Any]] = None, scope: str = "global",
          structure: str = "unstructured", norm: str = "l1") -> List[Any]:
  """Keep-masks of flat leaves removing exactly `k` weights or filters.

  Args:
    leaves: the parameter leaves (arrays).
    prunable: per leaf, whether it may be pruned.
    sparsity: fraction to remove, in [0, 1]; a Python number gives an exact
      `k`, a traced one a traced `k`.
    prev: per leaf, an earlier mask (ranked lowest: removed weights stay
      removed) or None; None for all leaves.
    scope: "global" (one ranking over every prunable leaf) or "layerwise".
    structure: "unstructured" (weights) or "channel" (output filters).
    norm: filter score of channel pruning, "l1" or "l2".

  Returns:
    Boolean masks, one per leaf (all True on leaves that are not prunable).
  """
  prev = list(prev) if prev is not None else [None] * len(leaves)
  idx = tuple(i for i, f in enumerate(prunable) if f)
  # Number of scores per prunable leaf (weights, or output filters).
  sizes = [int(np.size(leaves[i])) if structure == "unstructured"
           else int(np.shape(leaves[i])[-1]) for i in idx]
  # How many to remove: exact (Python) for a Python sparsity, else traced.
  if scope == "layerwise":
    ks = [num_pruned(sparsity, n) for n in sizes]
    if structure == "channel":  # Never remove every filter of a layer.
      ks = [jnp.minimum(k, n - 1) if isinstance(k, jax.Array)
            else min(k, n - 1) for k, n in zip(ks, sizes)]
  else:
    ks = [num_pruned(sparsity, sum(sizes))] if idx else []
  ks = [jnp.asarray(k, jnp.int32) for k in ks]
  return _masks(list(leaves), prev, ks, idx=idx, scope=scope,
                structure=structure, norm=norm)


@functools.partial(jax.jit, static_argnames=("idx", "scope", "structure",
                                             "norm"))
def _masks(leaves, prev, ks, *, idx, scope, structure, norm):
  """`masks` with `ks` weights/filters to remove, as one jitted program.

  One compiled program per architecture and setting, rather than its few
  hundred small ops compiled one by one when run eagerly.
  """
  masks = [jnp.ones(jnp.shape(x), jnp.bool_) for x in leaves]

  def scores_of(i):
    x = leaves[i]
    if structure == "unstructured":
      s = jnp.abs(x).reshape(-1).astype(jnp.float32)
      if prev[i] is not None:
        s = jnp.where(prev[i].reshape(-1), s, -1.0)
    else:
      s = _filter_scores(x, norm, normalise=scope == "global")
      if prev[i] is not None:
        kept = jnp.any(prev[i].reshape(-1, x.shape[-1]), axis=0)
        s = jnp.where(kept, s, -1.0)
    return s

  def expand(i, keep):
    shape = jnp.shape(leaves[i])
    if structure == "unstructured":
      return keep.reshape(shape)
    return jnp.broadcast_to(keep, shape)

  if not idx:
    return masks
  if scope == "layerwise":
    for i, k in zip(idx, ks):
      masks[i] = expand(i, _keep_lowest_pruned(scores_of(i), k))
  else:
    scores = [scores_of(i) for i in idx]
    keep = _keep_lowest_pruned(jnp.concatenate(scores), ks[0])
    offset = 0
    for i, s in zip(idx, scores):
      masks[i] = expand(i, keep[offset:offset + s.shape[0]])
      offset += s.shape[0]
  return masks
