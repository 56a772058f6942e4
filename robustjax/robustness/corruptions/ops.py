"""Traced (JAX) building blocks of the corruptions.

Everything here works on fixed shapes so that a corruption can take a traced
severity: severity-dependent filters are precomputed for all five severities
as NumPy arrays (`filters`, cached per image size) and indexed here with the
traced severity (`take_severity`). Here: boundary modes, applying separable
operators, 2-D correlation, bilinear sampling, ImageMagick-style motion
blur, the diamond-square plasma fractal, a Poisson sampler driven by
uniforms, BT.601 luma, and glass blur's local pixel shuffle.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST

# Luma weights of ITU-R BT.601, as in OpenCV's COLOR_RGB2GRAY and libjpeg.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------
# Boundary modes, named after scipy.ndimage:
#   'nearest': a a a | a b c d | d d d   (OpenCV BORDER_REPLICATE)
#   'reflect': b a | a b c d | d c      (half-sample symmetric)
#   'mirror':  c b | a b c d | c b      (OpenCV BORDER_REFLECT_101)
#   'wrap':    c d | a b c d | a b      (periodic)
# ----------------------------------------------------------------------------


def boundary_index(idx, n: int, mode: str, xp=jnp):
  """Maps integer indices (any range) into `[0, n)` with a boundary mode.

  Args:
    idx: integer array of indices (NumPy or JAX).
    n: length of the axis.
    mode: 'nearest', 'reflect', 'mirror' or 'wrap'.
    xp: the array module (`numpy` or `jax.numpy`).

  Returns:
    The mapped indices, same shape as `idx`.
  """
  if mode == 'nearest':
    return xp.clip(idx, 0, n - 1)
  if mode == 'wrap':
    return xp.mod(idx, n)
  if mode == 'reflect':
    m = xp.mod(idx, 2 * n)
    return xp.where(m < n, m, 2 * n - 1 - m)
  if mode == 'mirror':
    if n == 1:
      return xp.zeros_like(idx)
    m = xp.mod(idx, 2 * n - 2)
    return xp.where(m < n, m, 2 * n - 2 - m)
  raise ValueError(f'Unknown boundary mode {mode!r}.')


def take_severity(table, index):
  """Selects row `index` of a static per-severity table as a JAX array."""
  return jnp.take(jnp.asarray(table), index, axis=0)


def separable(x: jax.Array, mat_h: jax.Array, mat_w: jax.Array) -> jax.Array:
  """Applies row/column operators: `out[b] = mat_h @ x[b] @ mat_w.T`.

  Args:
    x: `(B, H, W, C)` images.
    mat_h: `(H_out, H)` operator.
    mat_w: `(W_out, W)` operator.

  Returns:
    `(B, H_out, W_out, C)` result.
  """
  y = jnp.einsum('hi,biwc->bhwc', mat_h, x, precision=_HIGHEST)
  return jnp.einsum('wj,bhjc->bhwc', mat_w, y, precision=_HIGHEST)


def correlate2d(x: jax.Array, kernel: jax.Array, mode: str = 'mirror'
                ) -> jax.Array:
  """Depthwise 2-D correlation with a square kernel and a boundary mode.

  Small kernels (<= 11 taps) are summed as shifted slices (fused by XLA; far
  faster on CPU than `lax.conv` with one feature); larger ones go through
  an FFT of the padded image.

  Args:
    x: `(B, H, W, C)` images.
    kernel: `(k, k)` kernel, k odd (same for all channels).
    mode: boundary mode used to pad the input.

  Returns:
    `(B, H, W, C)` filtered images.
  """
  k = kernel.shape[0]
  r = (k - 1) // 2
  _, h, w, _ = x.shape
  rows = boundary_index(jnp.arange(-r, h + r), h, mode)
  cols = boundary_index(jnp.arange(-r, w + r), w, mode)
  xp = x[:, rows][:, :, cols]
  kernel = kernel.astype(x.dtype)
  if k <= 11:
    out = jnp.zeros_like(x)
    for i in range(k):
      for j in range(k):
        out = out + kernel[i, j] * xp[:, i:i + h, j:j + w]
    return out
  # Circular correlation of the padded image: no wrap-around reaches the
  # valid h x w corner.
  size = (h + 2 * r, w + 2 * r)
  fx = jnp.fft.rfft2(xp, s=size, axes=(1, 2))
  fk = jnp.fft.rfft2(kernel, s=size)
  out = jnp.fft.irfft2(fx * jnp.conj(fk)[None, :, :, None], s=size,
                       axes=(1, 2))
  return out[:, :h, :w].astype(x.dtype)


def sample_bilinear(img: jax.Array, rows: jax.Array, cols: jax.Array,
                    mode: str) -> jax.Array:
  """Bilinear sampling of one image at fractional coordinates.

  Integer nodes outside the image are mapped with `mode` before
  interpolating, which reproduces `scipy.ndimage.map_coordinates(order=1)`
  for 'reflect' and OpenCV's `warpAffine` for 'mirror' (up to OpenCV's
  1/32-pixel fixed-point weights).

  Args:
    img: `(H, W, C)` image.
    rows: `(H', W')` row coordinates.
    cols: `(H', W')` column coordinates.
    mode: boundary mode.

  Returns:
    `(H', W', C)` samples.
  """
  h, w, c = img.shape
  r0 = jnp.floor(rows)
  c0 = jnp.floor(cols)
  fr = (rows - r0)[..., None]
  fc = (cols - c0)[..., None]
  r0 = r0.astype(jnp.int32)
  c0 = c0.astype(jnp.int32)
  ra = boundary_index(r0, h, mode) * w
  rb = boundary_index(r0 + 1, h, mode) * w
  ca = boundary_index(c0, w, mode)
  cb = boundary_index(c0 + 1, w, mode)
  flat = img.reshape(h * w, c)
  top = flat[ra + ca] * (1 - fc) + flat[ra + cb] * fc
  bottom = flat[rb + ca] * (1 - fc) + flat[rb + cb] * fc
  return top * (1 - fr) + bottom * fr


def motion_blur(x: jax.Array, taps: jax.Array, angle_deg: jax.Array
                ) -> jax.Array:
  """Line-kernel motion blur at an angle, like ImageMagick's `-motion-blur`.

  Output pixel `(y, x)` is `sum_i taps[i] * img[y + dy_i, x + dx_i]` with
  `dx_i = ceil(i cos(a) - 1/2)`, `dy_i = ceil(i sin(a) - 1/2)` and edge
  replication outside the image (ImageMagick's default virtual pixels).

  Args:
    x: `(B, H, W, C)` images.
    taps: `(T,)` weights (zeros past the severity's kernel width).
    angle_deg: `(B,)` angles in degrees.

  Returns:
    `(B, H, W, C)` blurred images.
  """
  num_taps = taps.shape[0]
  b, h, w, _ = x.shape
  a = jnp.deg2rad(angle_deg)

  def tap(i, acc):
    fi = i.astype(jnp.float32)
    dy = jnp.ceil(fi * jnp.sin(a) - 0.5).astype(jnp.int32)
    dx = jnp.ceil(fi * jnp.cos(a) - 0.5).astype(jnp.int32)
    rows = jnp.clip(jnp.arange(h)[None, :] + dy[:, None], 0, h - 1)
    cols = jnp.clip(jnp.arange(w)[None, :] + dx[:, None], 0, w - 1)
    y = jnp.take_along_axis(x, rows[:, :, None, None], axis=1)
    y = jnp.take_along_axis(y, cols[:, None, :, None], axis=2)
    return acc + taps[i] * y

  return jax.lax.fori_loop(0, num_taps, tap, jnp.zeros_like(x))


def plasma_fractal(uniforms: Sequence[jax.Array], decay: jax.Array
                   ) -> jax.Array:
  """Diamond-square height maps as in the reference's `plasma_fractal`.

  Random draws are inputs and do not depend on `decay`, so a traced `decay`
  (a severity parameter) gives severity-consistent maps.

  Args:
    uniforms: for level `i = 0 .. log2(mapsize) - 1`, a `(3, batch, 2^i,
      2^i)` array of uniforms in [-1, 1) (squares, row and column diamonds).
    decay: the reference's `wibbledecay` (scalar, may be traced).

  Returns:
    `(batch, mapsize, mapsize)` float32 maps normalised to [0, 1], where
    `mapsize = 2 ** len(uniforms)`.
  """
  batch = uniforms[0].shape[1]
  mapsize = 2 ** len(uniforms)
  # Grid of the points set so far (spacing `step` in the reference); each
  # level interleaves it with the square and diamond midpoints.
  grid = jnp.zeros((batch, 1, 1), jnp.float32)
  level = 0
  while grid.shape[1] < mapsize:
    n = grid.shape[1]
    wibble = 100.0 / decay ** level
    noise = (wibble * wibble) * uniforms[level]
    # Squares: centre = mean of the four corners + noise.
    acc = grid + jnp.roll(grid, -1, axis=1)
    sq = (acc + jnp.roll(acc, -1, axis=2)) / 4 + noise[0]
    # Diamonds: on the grid rows (between columns) and grid columns.
    d_row = (sq + jnp.roll(sq, 1, axis=1) + grid + jnp.roll(grid, -1, axis=2)
             ) / 4 + noise[1]
    d_col = (sq + jnp.roll(sq, 1, axis=2) + grid + jnp.roll(grid, -1, axis=1)
             ) / 4 + noise[2]
    top = jnp.stack([grid, d_row], axis=-1)  # even rows: grid, diamond
    bottom = jnp.stack([d_col, sq], axis=-1)  # odd rows: diamond, square
    grid = jnp.stack([top, bottom], axis=2).reshape(batch, 2 * n, 2 * n)
    # Materialise each level: otherwise XLA fuses the levels into one kernel
    # whose size (and compile time) grows exponentially with the depth.
    grid = jax.lax.optimization_barrier(grid)
    level += 1
  grid = grid - grid.min(axis=(1, 2), keepdims=True)
  return grid / grid.max(axis=(1, 2), keepdims=True)


def poisson_from_uniform(u: jax.Array, lam: jax.Array, small: float = 10.0,
                         steps: int = 32) -> jax.Array:
  """Poisson(lam) samples by transforming uniforms (fixed cost, jit-friendly).

  Exact inversion of the CDF for `lam < small` (the probability of needing
  more than `steps` terms is < 1e-7 there); for larger `lam` the
  Cornish-Fisher expansion of the Poisson quantile (three terms) rounded to
  the nearest integer, whose CDF is within 1e-3 of the exact one at
  lam = 10 and within 2e-5 at lam = 500 (see docs/corruptions.md). The map
  u -> sample is monotone, so the same `u` couples different `lam`.

  Args:
    u: uniforms in (0, 1).
    lam: rates (>= 0), broadcastable with `u`.
    small: switch-over rate.
    steps: inversion terms.

  Returns:
    Float samples (non-negative integers).
  """
  lam = jnp.broadcast_to(lam, u.shape)
  lam_s = jnp.minimum(lam, small)
  # Unrolled: XLA fuses the whole search into one elementwise kernel (a
  # fori_loop would stream five arrays through memory per step).
  p = jnp.exp(-lam_s)
  cdf = p
  k_small = jnp.zeros_like(u)
  for i in range(1, steps + 1):
    k_small = k_small + (u > cdf).astype(u.dtype)
    p = p * lam_s * (1.0 / i)
    cdf = cdf + p
  # ndtri, not sqrt(2) erfinv(2u - 1): fused with the search above, XLA's
  # CPU code for erfinv is much slower.
  z = jax.scipy.special.ndtri(u)
  sd = jnp.sqrt(jnp.maximum(lam, small))
  q = (lam + sd * z + (z * z - 1) / 6 + (z ** 3 - 3 * z) / (24 * sd)
       - (2 * z ** 3 - 5 * z) / (36 * sd))
  k_large = jnp.maximum(jnp.floor(q + 0.5), 0.0)
  return jnp.where(lam < small, k_small, k_large)


def to_gray(x: jax.Array) -> jax.Array:
  """BT.601 luma of `(..., 3)` RGB, keeping a trailing axis of size one."""
  return jnp.tensordot(x, jnp.asarray(LUMA_WEIGHTS, x.dtype), axes=1)[..., None]


@functools.lru_cache(maxsize=None)
def _local_shuffle_rounds(h: int, w: int) -> int:
  return int(math.ceil(math.log2(h * w))) + 1


def local_shuffle(x: jax.Array, u: jax.Array, delta: jax.Array,
                  active: jax.Array) -> jax.Array:
  """One pass of the reference's glass-blur pixel 'swaps', without a loop.

  The reference visits `(h, w)` for `h` from `H - delta` down to `delta + 1`
  and `w` likewise, drawing `dx, dy` in `[-delta, delta)` and executing
  `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on an `(H, W, 3)` array. Because
  NumPy evaluates the right side as views, this copies `x[h', w']` into
  `x[h, w]` and leaves `x[h', w']` unchanged. So the final value at `p` is the
  value at `q = p + (dy, dx)` at the time `p` was visited: the *final* value
  of `q` if `q` was visited before `p`, else the original one. We resolve
  these chains with pointer jumping (log2(H W) rounds of gathers) and get
  exactly the sequential result.

  Args:
    x: `(B, H, W, C)` images.
    u: `(B, 2, H, W)` uniforms in [0, 1) for (dy, dx) at every position.
    delta: maximum displacement (scalar int, may be traced).
    active: scalar bool; if False the pass is the identity.

  Returns:
    `(B, H, W, C)` shuffled images.
  """
  b, h, w, c = x.shape
  d = jnp.floor(u * (2 * delta)).astype(jnp.int32) - delta
  hh = jnp.arange(h)[:, None]
  ww = jnp.arange(w)[None, :]

  def inside(r, s):
    return (r >= delta + 1) & (r <= h - delta) & (s >= delta + 1) & (
        s <= w - delta)

  qh = hh + d[:, 0]
  qw = ww + d[:, 1]
  p_in = inside(hh, ww) & active
  pos = hh * w + ww
  q = qh * w + qw
  ptr = jnp.where(p_in, q, pos).reshape(b, h * w)
  done = (~(p_in & inside(qh, qw) & (q > pos))).reshape(b, h * w)

  def jump(_, state):
    ptr, done = state
    nxt = jnp.take_along_axis(ptr, ptr, axis=1)
    nxt_done = jnp.take_along_axis(done, ptr, axis=1)
    return jnp.where(done, ptr, nxt), done | nxt_done

  ptr, _ = jax.lax.fori_loop(0, _local_shuffle_rounds(h, w), jump,
                             (ptr, done))
  flat = x.reshape(b, h * w, c)
  return jnp.take_along_axis(flat, ptr[..., None], axis=1).reshape(x.shape)

