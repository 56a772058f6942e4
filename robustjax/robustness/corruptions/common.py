"""What the corruption functions share: context, table lookups, draws, blur.

Every corruption function has the signature `fn(x, idx, key, ctx)`: `x` is a
float32 NHWC batch, `idx` the traced severity index 0..4, `key` a PRNG key
and `ctx` the call's static `Ctx`. It returns the corrupted batch before the
final clipping to [0, 1].
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import filters
from robustjax.robustness.corruptions import ops


class Ctx(NamedTuple):
  """Static information about one call: table, image size, spatial scale."""
  table: str
  params: Any
  h: int
  w: int
  c: int
  scale: float


def column(ctx, col):
  """Column `col` of the severity table, as Python floats."""
  return tuple(float(p[col]) for p in ctx.params)


def column_all(ctx):
  """A one-parameter severity table, as Python floats."""
  return tuple(float(p) for p in ctx.params)


def row(ctx, idx):
  """Per-severity parameters as a traced vector (or scalar)."""
  return ops.take_severity(np.asarray(ctx.params, np.float32), idx)


def uniform(bits):
  """uint32 random bits -> float32 uniforms strictly inside (0, 1).

  The top 23 bits pick one of 2**23 equal bins and the value is the bin's
  centre `(m + 0.5) / 2**23`. Every centre is exact in float32 (24
  significant bits), so the extremes are 2**-24 and 1 - 2**-24 and both
  `ndtri(u)` and `erfinv(2u - 1)` stay finite. (With 24 bits the centres
  would need 25: the top bin rounded to exactly 1.0 and shot_noise gave NaN.)

  Args:
    bits: uint32 array.

  Returns:
    float32 array of the shape of `bits`, in [2**-24, 1 - 2**-24].
  """
  return ((bits >> 9).astype(jnp.float32) + 0.5) * (1.0 / (1 << 23))


def random(key, **specs):
  """All random draws of one call from a single `jax.random.bits` call.

  (One threefry call per corruption keeps XLA compile times low.)

  Args:
    key: PRNG key.
    **specs: name -> (kind, shape) with kind 'uniform' (in (0, 1)) or
      'normal'.

  Returns:
    Dict name -> float32 array.
  """
  sizes = [math.prod(shape) for _, shape in specs.values()]
  u = uniform(jax.random.bits(key, (sum(sizes),), jnp.uint32))
  out = {}
  start = 0
  for (name, (kind, shape)), size in zip(specs.items(), sizes):
    v = u[start:start + size].reshape(shape)
    if kind == 'normal':
      v = math.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * v - 1.0)
    out[name] = v
    start += size
  return out


@functools.lru_cache(maxsize=None)
def gaussian_stack(n, sigmas, truncate=4.0, mode='nearest'):
  """`(5, n, n)` Gaussian filter matrices, one per sigma (cached, float32)."""
  return np.stack([filters.gaussian_matrix(n, s, truncate, mode)
                   for s in sigmas]).astype(np.float32)


def blur(x, idx, ctx, sigmas, truncate=4.0, mode='nearest'):
  """Separable Gaussian blur, sigmas (per severity) scaled to the image."""
  sig = tuple(s * ctx.scale for s in sigmas)
  mh = ops.take_severity(gaussian_stack(ctx.h, sig, truncate, mode), idx)
  mw = ops.take_severity(gaussian_stack(ctx.w, sig, truncate, mode), idx)
  return ops.separable(x, mh, mw)
