"""The spatter corruption: water drops (severities 1-3) or mud (4-5).

The water drops' intensity map follows the reference's OpenCV pipeline
(Canny -> distance transform -> equalizeHist -> emboss), rebuilt in JAX
below. `spatter(x, idx, key, ctx)` follows the convention of `common`.
"""

import math

import jax
import jax.numpy as jnp

from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import ops


def _shift2d(a, dy, dx, fill):
  """`out[y, x] = a[y + dy, x + dx]` for `(B, H, W)` arrays, `fill` outside."""
  _, h, w = a.shape
  pad = max(abs(dy), abs(dx))
  ap = jnp.pad(a, ((0, 0), (pad, pad), (pad, pad)), constant_values=fill)
  return ap[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _correlate3x3(a, kernel, mode):
  """3x3 correlation of `(B, H, W)` with a boundary mode."""
  _, h, w = a.shape
  rows = ops.boundary_index(jnp.arange(-1, h + 1), h, mode)
  cols = ops.boundary_index(jnp.arange(-1, w + 1), w, mode)
  ap = a[:, rows][:, :, cols]
  out = jnp.zeros_like(a)
  for i in range(3):
    for j in range(3):
      if kernel[i][j]:
        out = out + kernel[i][j] * ap[:, i:i + h, j:j + w]
  return out


def canny(img: jax.Array, low: float, high: float) -> jax.Array:
  """OpenCV `cv2.Canny(img, low, high)` (aperture 3, L1 gradient).

  Sobel gradients with replicated borders, non-maximum suppression in four
  directions with OpenCV's tie rules, and hysteresis (8-connected) iterated
  to convergence.

  Args:
    img: `(B, H, W)` float array of 8-bit values (0..255).
    low: lower hysteresis threshold.
    high: upper hysteresis threshold.

  Returns:
    `(B, H, W)` bool edge map.
  """
  gx = _correlate3x3(img, ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)), 'nearest')
  gy = _correlate3x3(img, ((-1, -2, -1), (0, 0, 0), (1, 2, 1)), 'nearest')
  mag = jnp.abs(gx) + jnp.abs(gy)
  ax, ay = jnp.abs(gx), jnp.abs(gy)
  tg22 = ax * 0.4142135623730950488
  horizontal = ay < tg22
  vertical = ay > tg22 + 2 * ax
  nb = lambda dy, dx: _shift2d(mag, dy, dx, 0.0)
  keep_h = (mag > nb(0, -1)) & (mag >= nb(0, 1))
  keep_v = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
  same_sign = (gx * gy) >= 0  # OpenCV: s = (xs ^ ys) < 0 ? -1 : 1
  keep_d = jnp.where(same_sign,
                     (mag > nb(-1, -1)) & (mag > nb(1, 1)),
                     (mag > nb(-1, 1)) & (mag > nb(1, -1)))
  keep = jnp.where(horizontal, keep_h, jnp.where(vertical, keep_v, keep_d))
  weak = keep & (mag > low)
  strong = weak & (mag > high)

  def grow(state):
    edges, _ = state
    dil = edges
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        if dy or dx:
          dil = dil | _shift2d(edges, dy, dx, False)
    new = edges | (weak & dil)
    return new, jnp.any(new != edges)

  edges, _ = jax.lax.while_loop(lambda s: s[1], grow, (strong, jnp.array(True)))
  return edges


def truncated_distance(zero: jax.Array, trunc: float) -> jax.Array:
  """Euclidean distance to the nearest True pixel, truncated at `trunc`.

  Exact (two separable passes over a window of radius `ceil(trunc)`); OpenCV's
  `DIST_L2` with a 5x5 mask is a chamfer approximation of the same.

  Args:
    zero: `(B, H, W)` bool, the pixels at distance 0.
    trunc: truncation distance in pixels.

  Returns:
    `(B, H, W)` float32 distances in [0, trunc].
  """
  r = int(math.ceil(trunc))
  big = float(2 * (r + 1) ** 2)
  _, h, w = zero.shape
  zp = jnp.pad(zero, ((0, 0), (r, r), (0, 0)))

  def col_pass(d, g):
    hit = jax.lax.dynamic_slice_in_dim(zp, d, h, axis=1)
    return jnp.minimum(g, jnp.where(hit, ((d - r) ** 2).astype(jnp.float32),
                                    big))

  g = jax.lax.fori_loop(0, 2 * r + 1, col_pass,
                        jnp.full(zero.shape, big, jnp.float32))
  gp = jnp.pad(g, ((0, 0), (0, 0), (r, r)), constant_values=big)

  def row_pass(e, d2):
    shifted = jax.lax.dynamic_slice_in_dim(gp, e, w, axis=2)
    return jnp.minimum(d2, shifted + ((e - r) ** 2).astype(jnp.float32))

  d2 = jax.lax.fori_loop(0, 2 * r + 1, row_pass,
                         jnp.full(zero.shape, big, jnp.float32))
  return jnp.minimum(jnp.sqrt(d2), trunc)


def equalize_hist(img: jax.Array, num_levels: int) -> jax.Array:
  """OpenCV `cv2.equalizeHist` of `(B, H, W)` 8-bit values < `num_levels`."""
  b, h, w = img.shape
  levels = jnp.arange(num_levels, dtype=img.dtype)
  onehot = (img.reshape(b, -1, 1) == levels).astype(jnp.float32)
  hist = onehot.sum(axis=1)  # (B, L)
  first = jnp.argmax(hist > 0, axis=1)
  first_count = jnp.take_along_axis(hist, first[:, None], axis=1)
  total = float(h * w)
  scale = 255.0 / jnp.maximum(total - first_count, 1.0)
  cum = jnp.cumsum(hist, axis=1)
  cum0 = jnp.take_along_axis(cum, first[:, None], axis=1)
  lut = jnp.clip(jnp.round((cum - cum0) * scale), 0, 255)
  out = jnp.einsum('bpl,bl->bp', onehot, lut).reshape(b, h, w)
  constant = (first_count[:, 0] == total)[:, None, None]
  return jnp.where(constant, first[:, None, None].astype(img.dtype), out)


def water_mask(liquid: jax.Array, trunc: float) -> jax.Array:
  """The reference spatter's water-drop intensity map, normalised to max 1.

  Pipeline (reference): liquid -> uint8 -> Canny(50, 150) -> distance to
  edges, truncated at 20 px -> 3x3 box blur -> uint8 -> equalizeHist ->
  3x3 'emboss' filter (uint8, saturating) -> 3x3 box blur; times the liquid.

  Args:
    liquid: `(B, H, W)` thresholded liquid layer.
    trunc: distance truncation in pixels (20 at the reference size).

  Returns:
    `(B, H, W)` map in [0, 1].
  """
  box = ((1 / 9,) * 3,) * 3
  lu8 = jnp.floor(jnp.clip(liquid, 0, 1) * 255)
  edges = canny(lu8, 50.0, 150.0)
  dist = truncated_distance(edges, trunc)
  dist = jnp.floor(_correlate3x3(dist, box, 'mirror'))
  dist = equalize_hist(dist, int(math.ceil(trunc)) + 1)
  dist = jnp.clip(_correlate3x3(dist, ((-2, -1, 0), (-1, 1, 1), (0, 1, 2)),
                                'mirror'), 0, 255)
  dist = _correlate3x3(dist, box, 'mirror')
  m = lu8 * dist
  return m / jnp.maximum(jnp.max(m, axis=(1, 2), keepdims=True), 1e-12)


def spatter(x, idx, key, ctx):
  """Water drops or mud, chosen by the severity's mud flag."""
  p = common.row(ctx, idx)
  b = x.shape[0]
  z = common.random(key, z=('normal', (b, ctx.h, ctx.w, 1)))['z']
  liquid = p[0] + p[1] * z
  liquid = common.blur(liquid, idx, ctx, common.column(ctx, 2))[..., 0]
  liquid = jnp.where(liquid < p[3], 0.0, liquid)
  is_mud = common.column(ctx, 5)
  mud_sigmas = tuple(s if m else 0.0
                     for s, m in zip(common.column(ctx, 4), is_mud))
  trunc = 20.0 * ctx.scale

  def water():
    m = water_mask(liquid, trunc) * p[4]
    colour = jnp.asarray((175, 238, 238), jnp.float32) / 255
    add = m[..., None] * colour
    if ctx.c == 1:
      add = ops.to_gray(jnp.clip(add, 0, 1))
    return x + add

  def mud():
    m = (liquid > p[3]).astype(x.dtype)[..., None]
    m = common.blur(m, idx, ctx, mud_sigmas)
    m = jnp.where(m < 0.8, 0.0, m)
    colour = jnp.asarray((63, 42, 20), jnp.float32) / 255 * m
    if ctx.c == 1:
      colour = ops.to_gray(colour)
    return x * (1 - m) + colour

  return jax.lax.cond(p[5] > 0.5, mud, water)
