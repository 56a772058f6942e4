"""Static (NumPy) filters and resampling operators, built at trace time.

1-D linear operators are dense `(n_out, n_in)` float64 matrices that
include the reference's boundary mode: Gaussian filters as in
`scipy.ndimage`, order-1 zooms as in `scipy.ndimage.zoom`, Pillow's BOX
resize and OpenCV's bilinear resize; plus OpenCV's Gaussian blur and the
reference's disk kernel (defocus blur) and ImageMagick's motion-blur taps.
The corruptions cast them to float32 and cache them per image size.
"""

import math
from typing import Sequence

import numpy as np

from robustjax.robustness.corruptions import ops


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
  cols = ops.boundary_index(rows + offsets, n, mode, xp=np)
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
  np.add.at(mat, (rows, ops.boundary_index(i0, n_in, mode, xp=np)), 1 - frac)
  np.add.at(mat, (rows, ops.boundary_index(i0 + 1, n_in, mode, xp=np)), frac)
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

