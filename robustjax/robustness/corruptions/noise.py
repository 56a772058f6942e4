"""Noise corruptions: gaussian, shot (Poisson), impulse and speckle noise.

Each `fn(x, idx, key, ctx)` follows the convention of `common`.
"""

import jax.numpy as jnp

from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import ops


def gaussian_noise(x, idx, key, ctx):
  """Adds N(0, c^2) per element."""
  z = common.random(key, z=('normal', x.shape))['z']
  return x + common.row(ctx, idx) * z


def shot_noise(x, idx, key, ctx):
  """Poisson(x * c) / c per element."""
  photons = common.row(ctx, idx)
  u = common.random(key, u=('uniform', x.shape))['u']
  return ops.poisson_from_uniform(u, x * photons) / photons


def impulse_noise(x, idx, key, ctx):
  """Salt and pepper on a fraction c of the elements."""
  # One uniform per element: flipped with probability c, salt (1) for
  # u < c / 2 and pepper (0) otherwise, as skimage's 's&p' with ratio 0.5.
  u = common.random(key, u=('uniform', x.shape))['u']
  amount = common.row(ctx, idx)
  return jnp.where(u < amount, (u < amount / 2).astype(x.dtype), x)


def speckle_noise(x, idx, key, ctx):
  """Adds x * N(0, c^2) per element."""
  z = common.random(key, z=('normal', x.shape))['z']
  return x + x * common.row(ctx, idx) * z
