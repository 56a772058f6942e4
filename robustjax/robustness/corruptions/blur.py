"""Blur corruptions: gaussian, glass, defocus, motion and zoom blur.

Each `fn(x, idx, key, ctx)` follows the convention of `common`; the
severity-dependent filters are built once per image size and cached.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import filters
from robustjax.robustness.corruptions import ops

@functools.lru_cache(maxsize=None)
def _zoom_blur_stack(n, ranges):
  """`(5, K, n, n)` zoom matrices and `(5, K)` weights of each severity."""
  factors = [np.arange(*r) for r in ranges]
  k = max(len(f) for f in factors)
  mats = np.zeros((len(factors), k, n, n), np.float32)
  weights = np.zeros((len(factors), k), np.float32)
  for i, f in enumerate(factors):
    for j, z in enumerate(f):
      mats[i, j] = filters.zoom_matrix(n, float(z))
      weights[i, j] = 1.0 / (len(f) + 1)
  return mats, weights


@functools.lru_cache(maxsize=None)
def _zoom_blur_taps(n, ranges):
  """Two-tap form of `_zoom_blur_stack`: index/fraction `(5, K, n)` arrays."""
  mats, _ = _zoom_blur_stack(n, ranges)
  idx = np.zeros(mats.shape[:3], np.int32)
  frac = np.zeros(mats.shape[:3], np.float32)
  for s in range(mats.shape[0]):
    for k in range(mats.shape[1]):
      if mats[s, k].any():
        idx[s, k], frac[s, k] = filters.two_tap(
            mats[s, k].astype(np.float64))
  return idx, frac


@functools.lru_cache(maxsize=None)
def _defocus_stack(radii, alias_blurs):
  return filters.stack_centered([filters.disk_kernel(r, a)
                                 for r, a in zip(radii, alias_blurs)]
                                ).astype(np.float32)


@functools.lru_cache(maxsize=None)
def motion_stack(radii, sigmas):
  """Motion-blur taps of each severity, zero-padded to one length."""
  num_taps = 2 * int(math.ceil(max(radii))) + 1
  return np.stack([filters.motion_blur_taps(r, s, num_taps)
                   for r, s in zip(radii, sigmas)]).astype(np.float32)


def gaussian_blur(x, idx, key, ctx):
  """Gaussian blur (scipy.ndimage, nearest)."""
  del key
  return common.blur(x, idx, ctx, common.column_all(ctx))


def glass_blur(x, idx, key, ctx):
  """Gaussian blur, local pixel shuffles, Gaussian blur again."""
  sigmas = common.column(ctx, 0)
  deltas = tuple(max(1, int(round(d * ctx.scale)))
                 for d in common.column(ctx, 1))
  iters = tuple(int(i) for i in common.column(ctx, 2))
  delta = ops.take_severity(np.asarray(deltas, np.int32), idx)
  n_iter = ops.take_severity(np.asarray(iters, np.int32), idx)
  # The reference quantises the first blur to uint8 before shuffling.
  y = jnp.floor(jnp.clip(common.blur(x, idx, ctx, sigmas), 0, 1) * 255) / 255
  u = common.random(
      key, u=('uniform', (max(iters), x.shape[0], 2, ctx.h, ctx.w)))['u']
  for i in range(max(iters)):
    if i == 0:
      y = ops.local_shuffle(y, u[i], delta, True)
    else:  # Skipped at run time when the severity has fewer iterations.
      shuffle = functools.partial(ops.local_shuffle, u=u[i], delta=delta,
                                  active=True)
      y = jax.lax.cond(i < n_iter, shuffle, lambda y: y, y)
  return common.blur(y, idx, ctx, sigmas)


def defocus_blur(x, idx, key, ctx):
  """Correlation with an anti-aliased disk (mirror boundary)."""
  del key
  radii = tuple(r * ctx.scale for r in common.column(ctx, 0))
  kernels = _defocus_stack(radii, common.column(ctx, 1))
  return ops.correlate2d(x, ops.take_severity(kernels, idx), 'mirror')


def motion_blur(x, idx, key, ctx):
  """ImageMagick-style motion blur at a random angle."""
  taps = motion_stack(tuple(r * ctx.scale for r in common.column(ctx, 0)),
                       tuple(s * ctx.scale for s in common.column(ctx, 1)))
  angle = 90.0 * common.random(key, a=('uniform', (x.shape[0],)))['a'] - 45.0
  return ops.motion_blur(x, ops.take_severity(taps, idx), angle)


def zoom_blur(x, idx, key, ctx):
  """Mean of the image and its centre zooms."""
  del key
  ranges = tuple(tuple(r) for r in ctx.params)
  b, h, w, c = x.shape
  _, wts = _zoom_blur_stack(h, ranges)
  wts = ops.take_severity(wts, idx)
  norm = jnp.max(wts)  # 1 / (n + 1)
  hi = jax.lax.Precision.HIGHEST
  if h * w <= 1024:
    # Small images: all zooms summed into one (HW x HW) operator, one GEMM
    # (at CIFAR sizes much faster than separable products).
    mh = ops.take_severity(_zoom_blur_stack(h, ranges)[0], idx)
    mw = ops.take_severity(_zoom_blur_stack(w, ranges)[0], idx)
    mw = mw * wts[:, None, None]
    op = jnp.einsum('khi,kwj->hwij', mh, mw, precision=hi).reshape(h * w, -1)
    y = jnp.einsum('pq,bqc->bpc', op, x.reshape(b, h * w, c), precision=hi)
    return x * norm + y.reshape(x.shape)
  # Large images: bilinear zooms as two-tap gathers, only the severity's
  # zoom factors (the loop count is traced).
  rj, rf = (ops.take_severity(a, idx) for a in _zoom_blur_taps(h, ranges))
  cj, cf = (ops.take_severity(a, idx) for a in _zoom_blur_taps(w, ranges))
  count = jnp.sum(wts > 0)

  def zoom(k, acc):
    f = rf[k][None, :, None, None]
    y = x[:, rj[k]] * (1 - f) + x[:, jnp.minimum(rj[k] + 1, h - 1)] * f
    f = cf[k][None, None, :, None]
    y = y[:, :, cj[k]] * (1 - f) + y[:, :, jnp.minimum(cj[k] + 1, w - 1)] * f
    return acc + norm * y

  return jax.lax.fori_loop(0, count, zoom, x * norm)
