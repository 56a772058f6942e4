"""Building blocks for the common corruptions in `corruptions.py`.

Everything here works on fixed shapes so that a corruption can take a traced
severity: severity-dependent filters are precomputed for all five severities
as NumPy arrays (cached per image size) and indexed with the traced severity.

Two kinds of helpers live here:

* Static (NumPy, run once at trace time): 1-D linear operators written as
  dense `(n_out, n_in)` matrices that include the reference's boundary mode
  (Gaussian filters as in `scipy.ndimage`, order-1 zooms as in
  `scipy.ndimage.zoom`, Pillow's BOX resize, OpenCV's disk kernel).
* Traced (JAX): applying separable operators, 2-D correlation, bilinear
  sampling with boundary modes, ImageMagick-style motion blur, the
  diamond-square plasma fractal, and an 8x8-DCT JPEG codec.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


# ----------------------------------------------------------------------------
# Static 1-D operators (NumPy, float64).
# ----------------------------------------------------------------------------


def gaussian_taps(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """Normalised Gaussian taps as `scipy.ndimage.gaussian_filter1d` builds them.

  Args:
    sigma: standard deviation in pixels; `<= 0` gives the identity tap.
    truncate: the kernel radius is `int(truncate * sigma + 0.5)`.

  Returns:
    Odd-length float64 array of weights summing to one.
  """
  if sigma <= 0:
    return np.ones(1)
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def correlation_matrix(n: int, taps: np.ndarray, mode: str) -> np.ndarray:
  """Dense matrix of a centred 1-D correlation with a boundary mode.

  Args:
    n: signal length.
    taps: odd-length array of weights, centred.
    mode: boundary mode (see `boundary_index`).

  Returns:
    `(n, n)` float64 matrix `A` with `A @ signal` = filtered signal.
  """
  radius = (len(taps) - 1) // 2
  rows = np.repeat(np.arange(n), len(taps))
  offsets = np.tile(np.arange(-radius, radius + 1), n)
  cols = boundary_index(rows + offsets, n, mode, xp=np)
  mat = np.zeros((n, n))
  np.add.at(mat, (rows, cols), np.tile(taps, n))
  return mat


def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0,
                    mode: str = 'nearest') -> np.ndarray:
  """`(n, n)` matrix of `scipy.ndimage.gaussian_filter1d` (skimage defaults)."""
  return correlation_matrix(n, gaussian_taps(sigma, truncate), mode)


def zoom_matrix(n: int, zoom: float) -> np.ndarray:
  """`(n, n)` matrix of the reference's `clipped_zoom` along one axis.

  The reference crops the central `ceil(n / zoom)` pixels, zooms them with
  `scipy.ndimage.zoom(order=1)` (output length `round(crop * zoom)`, corner-
  aligned grid) and trims the centre `n` pixels of the result.

  Args:
    n: axis length.
    zoom: zoom factor (>= 1).

  Returns:
    `(n, n)` float64 interpolation matrix.
  """
  crop = int(math.ceil(n / float(zoom)))
  top = (n - crop) // 2
  out_len = int(round(crop * zoom))
  trim = (out_len - n) // 2
  mat = np.zeros((n, n))
  for i in range(n):
    o = trim + i
    src = o * (crop - 1) / (out_len - 1) if out_len > 1 else 0.0
    src = min(max(src, 0.0), crop - 1)
    i0 = int(math.floor(src))
    frac = src - i0
    i1 = min(i0 + 1, crop - 1)
    mat[i, top + i0] += 1.0 - frac
    mat[i, top + i1] += frac
  return mat


def two_tap(mat: np.ndarray):
  """Splits an interpolation matrix with <= 2 adjacent taps per row.

  Args:
    mat: `(n_out, n_in)` matrix whose row i is `(1 - f) e_j + f e_{j+1}`.

  Returns:
    `(j, f)`: int32 and float32 arrays of length n_out (j + 1 clamped).
  """
  j = np.argmax(mat > 0, axis=1)
  f = mat[np.arange(len(mat)), np.minimum(j + 1, mat.shape[1] - 1)]
  f = np.where(j + 1 < mat.shape[1], f, 0.0)
  assert np.allclose(mat.sum(axis=1), 1.0)
  return j.astype(np.int32), f.astype(np.float32)


def pil_box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`(n_out, n_in)` matrix of Pillow's `Image.BOX` resampling along one axis.

  Follows Pillow's `precompute_coeffs`: the box support is scaled by the
  downscaling factor, taps are evaluated at input pixel centres and
  normalised (Pillow then rounds to 8 bits after each pass; we do not).

  Args:
    n_in: input length.
    n_out: output length.

  Returns:
    The resampling matrix.
  """
  scale = n_in / n_out
  filterscale = max(scale, 1.0)
  support = 0.5 * filterscale
  mat = np.zeros((n_out, n_in))
  for xx in range(n_out):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), n_in)
    for x in range(xmin, xmax):
      u = (x - center + 0.5) / filterscale
      if -0.5 < u <= 0.5:
        mat[xx, x] = 1.0
    total = mat[xx].sum()
    if total > 0:
      mat[xx] /= total
  return mat


def bilinear_resize_matrix(n_in: int, n_out: int, mode: str = 'wrap'
                           ) -> np.ndarray:
  """`(n_out, n_in)` matrix of OpenCV `INTER_LINEAR` resizing (no antialias).

  Sample positions are `(o + 0.5) * n_in / n_out - 0.5` (half-pixel centres).

  Args:
    n_in: input length.
    n_out: output length.
    mode: boundary mode for the two taps.

  Returns:
    The resampling matrix.
  """
  src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  i0 = np.floor(src).astype(np.int64)
  frac = src - i0
  mat = np.zeros((n_out, n_in))
  rows = np.arange(n_out)
  np.add.at(mat, (rows, boundary_index(i0, n_in, mode, xp=np)), 1 - frac)
  np.add.at(mat, (rows, boundary_index(i0 + 1, n_in, mode, xp=np)), frac)
  return mat


def opencv_gaussian_blur(img: np.ndarray, ksize: int, sigma: float
                         ) -> np.ndarray:
  """NumPy `cv2.GaussianBlur(img, (ksize, ksize), sigma)` (BORDER_REFLECT_101).

  Args:
    img: 2-D float array.
    ksize: odd kernel size.
    sigma: standard deviation (> 0).

  Returns:
    The blurred array.
  """
  x = np.arange(ksize) - (ksize - 1) / 2
  taps = np.exp(-x ** 2 / (2 * sigma ** 2))
  taps /= taps.sum()
  a0 = correlation_matrix(img.shape[0], taps, 'mirror')
  a1 = correlation_matrix(img.shape[1], taps, 'mirror')
  return a0 @ img @ a1.T


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """The reference's anti-aliased disk used by `defocus_blur`.

  An aliased disk `x^2 + y^2 <= r^2` on a grid of half-size `max(8, ceil(r))`
  is normalised, then blurred with a 3x3 (r <= 8) or 5x5 Gaussian of
  standard deviation `alias_blur`.

  Args:
    radius: disk radius in pixels.
    alias_blur: sigma of the anti-aliasing blur.

  Returns:
    Square float64 kernel.
  """
  half = max(8, int(math.ceil(radius)))
  grid = np.arange(-half, half + 1)
  xx, yy = np.meshgrid(grid, grid)
  disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
  disk /= disk.sum()
  return opencv_gaussian_blur(disk, 3 if radius <= 8 else 5, alias_blur)


def stack_centered(kernels: Sequence[np.ndarray]) -> np.ndarray:
  """Zero-pads square kernels to a common size and crops all-zero borders.

  Args:
    kernels: square odd-sized 2-D kernels.

  Returns:
    `(len(kernels), k, k)` array, each kernel centred.
  """
  size = max(k.shape[0] for k in kernels)
  out = np.zeros((len(kernels), size, size))
  for i, k in enumerate(kernels):
    o = (size - k.shape[0]) // 2
    out[i, o:o + k.shape[0], o:o + k.shape[1]] = k
  support = np.abs(out).max(axis=(0, 1)) > 0
  support = support | support[::-1]
  first = int(np.argmax(support))
  return out[:, first:size - first, first:size - first]


# ----------------------------------------------------------------------------
# Traced helpers.
# ----------------------------------------------------------------------------


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


def motion_blur_taps(radius: float, sigma: float, num_taps: int) -> np.ndarray:
  """ImageMagick `MotionBlurImage` weights, zero-padded to `num_taps`.

  ImageMagick uses `width = 2 * ceil(radius) + 1` one-sided taps with weights
  `exp(-i^2 / (2 sigma^2))`, normalised.

  Args:
    radius: blur radius in pixels.
    sigma: Gaussian sigma in pixels.
    num_taps: output length (>= width).

  Returns:
    `(num_taps,)` float64 weights.
  """
  width = 2 * int(math.ceil(radius)) + 1
  i = np.arange(width, dtype=np.float64)
  w = np.exp(-i ** 2 / (2 * sigma ** 2))
  out = np.zeros(num_taps)
  out[:width] = w / w.sum()
  return out


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
  # CPU code for erfinv is ~3x slower.
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


# ----------------------------------------------------------------------------
# JPEG (baseline, 4:2:0 chroma for RGB), following libjpeg as used by Pillow.
# ----------------------------------------------------------------------------

# IJG standard quantisation tables (JPEG spec, Annex K), natural order.
_LUMA_QUANT = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.int64).reshape(8, 8)
_CHROMA_QUANT = np.full((8, 8), 99, np.int64)
_CHROMA_QUANT[:4, :4] = np.array([
    17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99,
]).reshape(4, 4)


def jpeg_quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """IJG quality scaling (`jpeg_set_quality(..., force_baseline=TRUE)`).

  Args:
    quality: 1..100.

  Returns:
    `(luma, chroma)` 8x8 float64 quantisation tables.
  """
  quality = min(max(int(quality), 1), 100)
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  tables = []
  for base in (_LUMA_QUANT, _CHROMA_QUANT):
    t = (base * scale + 50) // 100
    tables.append(np.clip(t, 1, 255).astype(np.float64))
  return tables[0], tables[1]


def _dct_matrix() -> np.ndarray:
  k = np.arange(8)[:, None]
  n = np.arange(8)[None, :]
  d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
  d[0] /= np.sqrt(2)
  return d


_DCT = _dct_matrix()
_DCT2 = np.kron(_DCT, _DCT)  # acts on row-major flattened 8x8 blocks


def _round_half_away(x):
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _jpeg_plane(plane: jax.Array, quant: jax.Array) -> jax.Array:
  """Level shift, 8x8 DCT, quantise, dequantise, IDCT of `(B, H, W)` planes.

  H and W must be multiples of 8. Returns the decoded samples (0..255,
  rounded and range-limited as libjpeg's IDCT does).
  """
  b, h, w = plane.shape
  blocks = (plane - 128.0).reshape(b, h // 8, 8, w // 8, 8)
  blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(-1, 64)
  # 2-D DCT of all blocks as one GEMM with the 64x64 Kronecker matrix.
  dct = jnp.asarray(_DCT2, plane.dtype)
  coef = jnp.dot(blocks, dct.T, precision=_HIGHEST)
  q = quant.reshape(1, 64)
  coef = _round_half_away(coef / q) * q
  rec = jnp.dot(coef, dct, precision=_HIGHEST)
  rec = rec.reshape(b, h // 8, w // 8, 8, 8).transpose(0, 1, 3, 2, 4)
  return jnp.clip(jnp.round(rec + 128.0), 0, 255).reshape(b, h, w)


def _fancy_upsample(c: jax.Array) -> jax.Array:
  """libjpeg's h2v2 'fancy' (triangle) chroma upsampling of `(B, h, w)`."""
  def up(a, axis):
    n = a.shape[axis]
    prev = jnp.take(a, jnp.clip(jnp.arange(n) - 1, 0, n - 1), axis=axis)
    nxt = jnp.take(a, jnp.clip(jnp.arange(n) + 1, 0, n - 1), axis=axis)
    even = 0.75 * a + 0.25 * prev
    odd = 0.75 * a + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(a.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)
  return jnp.round(up(up(c, 1), 2))


def jpeg(x: jax.Array, quant_luma: jax.Array, quant_chroma: jax.Array
         ) -> jax.Array:
  """JPEG encode + decode of `(B, H, W, C)` images in [0, 1] (C = 1 or 3).

  RGB: JFIF YCbCr, 2x2 chroma subsampling (libjpeg's biased box average),
  8x8 DCT, quantisation with rounding, IDCT, libjpeg's 'fancy' (triangle)
  chroma upsampling, YCbCr -> RGB. Grayscale: a one-component (luma only)
  JPEG. Samples are rounded to 8 bits wherever libjpeg stores them, and
  edges are padded by replication the way libjpeg pads partial MCUs. The
  DCT is exact (float) where libjpeg's is integer, which flips a rare
  coefficient's rounding (measured PSNR vs Pillow: 41-58 dB).

  Args:
    x: images in [0, 1].
    quant_luma: `(8, 8)` luma quantisation table.
    quant_chroma: `(8, 8)` chroma quantisation table.

  Returns:
    Decoded images in [0, 1] (multiples of 1/255).
  """
  b, h, w, c = x.shape
  v = jnp.round(jnp.clip(x, 0, 1) * 255.0)
  if c == 1:
    v = jnp.pad(v[..., 0], ((0, 0), (0, -h % 8), (0, -w % 8)), mode='edge')
    y = _jpeg_plane(v, quant_luma)
    return (y[:, :h, :w, None] / 255.0).astype(x.dtype)
  # libjpeg pads the full-resolution rows only to an even count and the
  # columns to whole MCUs; the subsampled chroma rows are padded at chroma
  # resolution.
  v = jnp.pad(v, ((0, 0), (0, h % 2), (0, -w % 16), (0, 0)), mode='edge')
  r, g, bl = v[..., 0], v[..., 1], v[..., 2]
  yy = jnp.round(0.299 * r + 0.587 * g + 0.114 * bl)
  cb = jnp.round(-0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0)
  cr = jnp.round(0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0)
  hh, ww = yy.shape[1:]
  yy = jnp.pad(yy, ((0, 0), (0, -hh % 8), (0, 0)), mode='edge')
  # libjpeg h2v2_downsample: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, 2, ...
  bias = jnp.tile(jnp.asarray([1.0, 2.0]), ww // 4)

  def down(p):
    total = p.reshape(b, hh // 2, 2, ww // 2, 2).sum(axis=(2, 4))
    sub = jnp.floor((total + bias) / 4)
    return jnp.pad(sub, ((0, 0), (0, -(hh // 2) % 8), (0, 0)), mode='edge')

  def chroma(p):
    # Upsampling clamps at the last real chroma row / column.
    dec = _jpeg_plane(down(p), quant_chroma)[:, :(h + 1) // 2, :(w + 1) // 2]
    return _fancy_upsample(dec)[:, :h, :w] - 128.0

  yy = _jpeg_plane(yy, quant_luma)[:, :h, :w]
  cb, cr = chroma(cb), chroma(cr)
  r = yy + 1.402 * cr
  g = yy - 0.344136 * cb - 0.714136 * cr
  bl = yy + 1.772 * cb
  out = jnp.clip(jnp.round(jnp.stack([r, g, bl], axis=-1)), 0, 255)
  return (out / 255.0).astype(x.dtype)


# ----------------------------------------------------------------------------
# Spatter's water mask: OpenCV Canny -> distance transform -> equalizeHist.
# ----------------------------------------------------------------------------


def _shift2d(a, dy, dx, fill):
  """`out[y, x] = a[y + dy, x + dx]` for `(B, H, W)` arrays, `fill` outside."""
  _, h, w = a.shape
  pad = max(abs(dy), abs(dx))
  ap = jnp.pad(a, ((0, 0), (pad, pad), (pad, pad)), constant_values=fill)
  return ap[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _correlate3x3(a, kernel, mode):
  """3x3 correlation of `(B, H, W)` with a boundary mode."""
  _, h, w = a.shape
  rows = boundary_index(jnp.arange(-1, h + 1), h, mode)
  cols = boundary_index(jnp.arange(-1, w + 1), w, mode)
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
