"""Weather corruptions: snow and fog (frost lives in `frost`).

Each `fn(x, idx, key, ctx)` follows the convention of `common`.
"""

import functools

import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import blur
from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import filters
from robustjax.robustness.corruptions import ops

@functools.lru_cache(maxsize=None)
def _zoom_stack(n, zooms):
  return np.stack([filters.zoom_matrix(n, z)
                   for z in zooms]).astype(np.float32)


def snow(x, idx, key, ctx):
  """Zoomed, thresholded, motion-blurred snow layers on a brightened image."""
  p = common.row(ctx, idx)
  b = x.shape[0]
  r = common.random(key, z=('normal', (b, ctx.h, ctx.w, 1)),
                    a=('uniform', (b,)))
  layer = p[0] + p[1] * r['z']
  zooms = tuple(max(1.0, z * ctx.scale) for z in common.column(ctx, 2))
  layer = ops.separable(layer,
                        ops.take_severity(_zoom_stack(ctx.h, zooms), idx),
                        ops.take_severity(_zoom_stack(ctx.w, zooms), idx))
  layer = jnp.where(layer < p[3], 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0, 1) * 255) / 255  # PIL 'L' image
  taps = blur.motion_stack(
      tuple(r * ctx.scale for r in common.column(ctx, 4)),
      tuple(s * ctx.scale for s in common.column(ctx, 5)))
  angle = 90.0 * r['a'] - 135.0
  layer = ops.motion_blur(layer, ops.take_severity(taps, idx), angle)
  layer = jnp.round(layer * 255) / 255  # ImageMagick writes 8-bit PNG
  gray = ops.to_gray(x) if ctx.c == 3 else x
  x = p[6] * x + (1 - p[6]) * jnp.maximum(x, gray * 1.5 + 0.5)
  return x + layer + layer[:, ::-1, ::-1]


def fog(x, idx, key, ctx):
  """Adds a plasma-fractal haze, rescaled by max / (max + strength)."""
  p = common.row(ctx, idx)
  mapsize = 1 << (max(ctx.h, ctx.w) - 1).bit_length()
  b = x.shape[0]
  levels = mapsize.bit_length() - 1
  r = common.random(key, **{f'l{i}': ('uniform', (3, b, 2 ** i, 2 ** i))
                            for i in range(levels)})
  plasma = ops.plasma_fractal([2 * r[f'l{i}'] - 1 for i in range(levels)],
                              p[1])
  plasma = plasma[:, :ctx.h, :ctx.w, None]
  max_val = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  return (x + p[0] * plasma) * max_val / (max_val + p[0])
