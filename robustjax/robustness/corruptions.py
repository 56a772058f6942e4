"""Common image corruptions of Hendrycks & Dietterich (2019) in pure JAX.

The 15 benchmark corruptions of ImageNet-C / CIFAR-10-C and the 4 held-out
extras, with the reference's severity tables for CIFAR (32 px,
`make_cifar_c.py`) and ImageNet (224 px, `make_imagenet_c.py`):

  corruption = get_corruption('fog', table='cifar')
  x_c = corruption.apply(images, severity, key)   # NHWC float in [0, 1]

* `severity` (1..5) may be a traced integer: parameters are looked up in
  per-severity arrays and all shapes are fixed, so
  `jax.vmap(lambda s: c.apply(x, s, key))(jnp.arange(1, 6))` compiles once.
* Random draws depend only on `key` (not on the severity): the same key gives
  the same output, and the five severities share their noise.
* Images may have any size >= 8 px and 1 (grayscale) or 3 (RGB) channels.
  Spatial parameters (blur radii, displacements, ...) are multiplied by
  `sqrt(H * W) / reference_size` (32 or 224), so at the reference size the
  reference constants are used unchanged. Relative parameters (zoom factors,
  pixelate fractions, JPEG quality, intensities) are never scaled.
* Grayscale images get the luma of what the corruption would do to the
  grayscale image replicated to RGB (e.g. frost and spatter blend a gray
  texture/colour; saturate only changes a gray pixel through its hue-0
  'red' offset at severities 4-5).
* Computation is in float32; the output has the input's dtype and is clipped
  to [0, 1].

Deviations from the reference (ImageMagick motion blur, frost photographs,
libjpeg, OpenCV Canny/distance transform) and their measured agreement are
documented in docs/corruptions.md.
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness import corruption_ops as ops
from robustjax.robustness import frost as frost_lib

BENCHMARK = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
             'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
             'brightness', 'contrast', 'elastic_transform', 'pixelate',
             'jpeg_compression')
EXTRA = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
ALL = BENCHMARK + EXTRA
NUM_SEVERITIES = 5
TABLES = ('cifar', 'imagenet')

# Corruptions whose output does not depend on the key.
DETERMINISTIC = ('defocus_blur', 'zoom_blur', 'brightness', 'contrast',
                 'pixelate', 'jpeg_compression', 'gaussian_blur', 'saturate')


class Corruption(NamedTuple):
  """A corruption: `apply(images, severity, key) -> images`.

  Attributes:
    name: corruption name (one of `ALL`).
    apply: pure function of `(images, severity, key)`; `images` is an NHWC
      float batch in [0, 1], `severity` an int in 1..5 (may be traced), `key`
      a `jax.random` key (ignored by deterministic corruptions, may be None).
  """
  name: str
  apply: Callable[..., jax.Array]


# ----------------------------------------------------------------------------
# Reference severity tables (make_cifar_c.py / make_imagenet_c.py).
# ----------------------------------------------------------------------------

_REFERENCE_SIZE = {'cifar': 32, 'imagenet': 224}
# CIFAR resizes the frost photographs by 0.2 before cropping 32 px.
_FROST_PHOTO_SCALE = {'cifar': 0.2, 'imagenet': 1.0}
# elastic_transform constants are fractions of IMSIZE=32 (CIFAR) and of 244
# (ImageNet; "244 should have been 224" in the reference).
_ELASTIC_UNIT = {'cifar': 32.0, 'imagenet': 244.0}

_PARAMS = {
    'cifar': {
        'gaussian_noise': (0.04, 0.06, 0.08, 0.09, 0.10),
        'shot_noise': (500, 250, 100, 75, 50),
        'impulse_noise': (0.01, 0.02, 0.03, 0.05, 0.07),
        # (sigma, alias_blur)
        'defocus_blur': ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2),
                         (1.5, 0.1)),
        # (sigma, max_delta, iterations)
        'glass_blur': ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2),
                       (0.4, 1, 2)),
        # (radius, sigma)
        'motion_blur': ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        # np.arange(start, stop, step) of zoom factors
        'zoom_blur': ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01),
                      (1, 1.21, 0.01), (1, 1.26, 0.01)),
        # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
        'snow': ((0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        # (image weight, frost weight)
        'frost': ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        # (strength, wibble decay)
        'fog': ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        'brightness': (0.05, 0.1, 0.15, 0.2, 0.3),
        'contrast': (0.75, 0.5, 0.4, 0.3, 0.15),
        # (alpha, sigma, affine) in units of _ELASTIC_UNIT
        'elastic_transform': ((0, 0, 0.08), (0.05, 0.2, 0.07),
                              (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                              (0.1, 0.03, 0.03)),
        'pixelate': (0.95, 0.9, 0.85, 0.75, 0.65),
        'jpeg_compression': (80, 65, 58, 50, 40),
        'speckle_noise': (0.06, 0.1, 0.12, 0.16, 0.2),
        'gaussian_blur': (0.4, 0.6, 0.7, 0.8, 1),
        # (loc, scale, sigma, threshold, intensity or mud sigma, mud?)
        'spatter': ((0.62, 0.1, 0.7, 0.7, 0.5, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
        # (saturation factor, offset)
        'saturate': ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    },
    'imagenet': {
        'gaussian_noise': (0.08, 0.12, 0.18, 0.26, 0.38),
        'shot_noise': (60, 25, 12, 5, 3),
        'impulse_noise': (0.03, 0.06, 0.09, 0.17, 0.27),
        'defocus_blur': ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        'glass_blur': ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
                       (1.5, 4, 2)),
        'motion_blur': ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        'zoom_blur': ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02),
                      (1, 1.26, 0.02), (1, 1.31, 0.03)),
        'snow': ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                 (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        'frost': ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        'fog': ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        'brightness': (0.1, 0.2, 0.3, 0.4, 0.5),
        'contrast': (0.4, 0.3, 0.2, 0.1, 0.05),
        'elastic_transform': ((2, 0.7, 0.1), (2, 0.08, 0.2),
                              (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                              (0.12, 0.01, 0.02)),
        'pixelate': (0.6, 0.5, 0.4, 0.3, 0.25),
        'jpeg_compression': (25, 18, 15, 10, 7),
        'speckle_noise': (0.15, 0.2, 0.35, 0.45, 0.6),
        'gaussian_blur': (1, 2, 3, 4, 6),
        'spatter': ((0.65, 0.3, 4, 0.69, 0.6, 0),
                    (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)),
        'saturate': ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
}


class _Ctx(NamedTuple):
  """Static information about one call: table, image size, spatial scale."""
  table: str
  params: Any
  h: int
  w: int
  c: int
  scale: float


def _column(ctx, col):
  """Column `col` of the severity table, as Python floats."""
  return tuple(float(p[col]) for p in ctx.params)


def _column_all(ctx):
  """A one-parameter severity table, as Python floats."""
  return tuple(float(p) for p in ctx.params)


def _row(ctx, idx):
  """Per-severity parameters as a traced vector (or scalar)."""
  return ops.take_severity(np.asarray(ctx.params, np.float32), idx)


def _uniform(bits):
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


def _random(key, **specs):
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
  u = _uniform(jax.random.bits(key, (sum(sizes),), jnp.uint32))
  out = {}
  start = 0
  for (name, (kind, shape)), size in zip(specs.items(), sizes):
    v = u[start:start + size].reshape(shape)
    if kind == 'normal':
      v = math.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * v - 1.0)
    out[name] = v
    start += size
  return out


# ----------------------------------------------------------------------------
# Cached static operators (NumPy, float32), keyed by plain values.
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _gaussian_stack(n, sigmas, truncate=4.0, mode='nearest'):
  return np.stack([ops.gaussian_matrix(n, s, truncate, mode)
                   for s in sigmas]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _zoom_stack(n, zooms):
  return np.stack([ops.zoom_matrix(n, z) for z in zooms]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _zoom_blur_stack(n, ranges):
  factors = [np.arange(*r) for r in ranges]
  k = max(len(f) for f in factors)
  mats = np.zeros((len(factors), k, n, n), np.float32)
  weights = np.zeros((len(factors), k), np.float32)
  for i, f in enumerate(factors):
    for j, z in enumerate(f):
      mats[i, j] = ops.zoom_matrix(n, float(z))
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
        idx[s, k], frac[s, k] = ops.two_tap(mats[s, k].astype(np.float64))
  return idx, frac


@functools.lru_cache(maxsize=None)
def _pixelate_stack(n, fracs):
  """Pillow BOX down (zero-padded `(5, m, n)`) and BOX up as an index map.

  Upsampling with BOX gives every output pixel exactly one input pixel, so
  it is a gather (`(5, n)` indices into the small image).
  """
  sizes = [max(int(n * f), 1) for f in fracs]
  down = np.zeros((len(fracs), max(sizes), n), np.float32)
  up = np.zeros((len(fracs), n), np.int32)
  for i, small in enumerate(sizes):
    down[i, :small] = ops.pil_box_resize_matrix(n, small)
    up[i] = np.argmax(ops.pil_box_resize_matrix(small, n), axis=1)
  return down, up


@functools.lru_cache(maxsize=None)
def _defocus_stack(radii, alias_blurs):
  return ops.stack_centered([ops.disk_kernel(r, a)
                             for r, a in zip(radii, alias_blurs)]
                            ).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _motion_stack(radii, sigmas):
  num_taps = 2 * int(math.ceil(max(radii))) + 1
  return np.stack([ops.motion_blur_taps(r, s, num_taps)
                   for r, s in zip(radii, sigmas)]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _jpeg_stack(qualities):
  tables = [ops.jpeg_quant_tables(q) for q in qualities]
  return (np.stack([t[0] for t in tables]).astype(np.float32),
          np.stack([t[1] for t in tables]).astype(np.float32))


@functools.lru_cache(maxsize=None)
def _frost_stack(size):
  """Frost textures resampled to `size` px (OpenCV INTER_LINEAR), uint8."""
  tex = frost_lib.frost_textures()
  mat = ops.bilinear_resize_matrix(tex.shape[1], size, mode='wrap')
  out = np.einsum('hi,kijc->khjc', mat, tex, optimize=True)
  out = np.einsum('wj,khjc->khwc', mat, out, optimize=True)
  return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Noise.
# ----------------------------------------------------------------------------


def _gaussian_noise(x, idx, key, ctx):
  z = _random(key, z=('normal', x.shape))['z']
  return x + _row(ctx, idx) * z


def _shot_noise(x, idx, key, ctx):
  photons = _row(ctx, idx)
  u = _random(key, u=('uniform', x.shape))['u']
  return ops.poisson_from_uniform(u, x * photons) / photons


def _impulse_noise(x, idx, key, ctx):
  # One uniform per element: flipped with probability c, salt (1) for
  # u < c / 2 and pepper (0) otherwise, as skimage's 's&p' with ratio 0.5.
  u = _random(key, u=('uniform', x.shape))['u']
  amount = _row(ctx, idx)
  return jnp.where(u < amount, (u < amount / 2).astype(x.dtype), x)


def _speckle_noise(x, idx, key, ctx):
  z = _random(key, z=('normal', x.shape))['z']
  return x + x * _row(ctx, idx) * z


# ----------------------------------------------------------------------------
# Blur.
# ----------------------------------------------------------------------------


def _blur(x, idx, ctx, sigmas, truncate=4.0, mode='nearest'):
  sig = tuple(s * ctx.scale for s in sigmas)
  mh = ops.take_severity(_gaussian_stack(ctx.h, sig, truncate, mode), idx)
  mw = ops.take_severity(_gaussian_stack(ctx.w, sig, truncate, mode), idx)
  return ops.separable(x, mh, mw)


def _gaussian_blur(x, idx, key, ctx):
  del key
  return _blur(x, idx, ctx, _column_all(ctx))


def _glass_blur(x, idx, key, ctx):
  sigmas = _column(ctx, 0)
  deltas = tuple(max(1, int(round(d * ctx.scale))) for d in _column(ctx, 1))
  iters = tuple(int(i) for i in _column(ctx, 2))
  delta = ops.take_severity(np.asarray(deltas, np.int32), idx)
  n_iter = ops.take_severity(np.asarray(iters, np.int32), idx)
  # The reference quantises the first blur to uint8 before shuffling.
  y = jnp.floor(jnp.clip(_blur(x, idx, ctx, sigmas), 0, 1) * 255) / 255
  u = _random(key, u=('uniform', (max(iters), x.shape[0], 2, ctx.h, ctx.w))
              )['u']
  for i in range(max(iters)):
    if i == 0:
      y = ops.local_shuffle(y, u[i], delta, True)
    else:  # Skipped at run time when the severity has fewer iterations.
      shuffle = functools.partial(ops.local_shuffle, u=u[i], delta=delta,
                                  active=True)
      y = jax.lax.cond(i < n_iter, shuffle, lambda y: y, y)
  return _blur(y, idx, ctx, sigmas)


def _defocus_blur(x, idx, key, ctx):
  del key
  radii = tuple(r * ctx.scale for r in _column(ctx, 0))
  kernels = _defocus_stack(radii, _column(ctx, 1))
  return ops.correlate2d(x, ops.take_severity(kernels, idx), 'mirror')


def _motion_blur(x, idx, key, ctx):
  taps = _motion_stack(tuple(r * ctx.scale for r in _column(ctx, 0)),
                       tuple(s * ctx.scale for s in _column(ctx, 1)))
  angle = 90.0 * _random(key, a=('uniform', (x.shape[0],)))['a'] - 45.0
  return ops.motion_blur(x, ops.take_severity(taps, idx), angle)


def _zoom_blur(x, idx, key, ctx):
  del key
  ranges = tuple(tuple(r) for r in ctx.params)
  b, h, w, c = x.shape
  _, wts = _zoom_blur_stack(h, ranges)
  wts = ops.take_severity(wts, idx)
  norm = jnp.max(wts)  # 1 / (n + 1)
  hi = jax.lax.Precision.HIGHEST
  if h * w <= 1024:
    # Small images: all zooms summed into one (HW x HW) operator, one GEMM
    # (6x faster at 32 px than separable products).
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


# ----------------------------------------------------------------------------
# Weather.
# ----------------------------------------------------------------------------


def _snow(x, idx, key, ctx):
  p = _row(ctx, idx)
  b = x.shape[0]
  r = _random(key, z=('normal', (b, ctx.h, ctx.w, 1)), a=('uniform', (b,)))
  layer = p[0] + p[1] * r['z']
  zooms = tuple(max(1.0, z * ctx.scale) for z in _column(ctx, 2))
  layer = ops.separable(layer,
                        ops.take_severity(_zoom_stack(ctx.h, zooms), idx),
                        ops.take_severity(_zoom_stack(ctx.w, zooms), idx))
  layer = jnp.where(layer < p[3], 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0, 1) * 255) / 255  # PIL 'L' image
  taps = _motion_stack(tuple(r * ctx.scale for r in _column(ctx, 4)),
                       tuple(s * ctx.scale for s in _column(ctx, 5)))
  angle = 90.0 * r['a'] - 135.0
  layer = ops.motion_blur(layer, ops.take_severity(taps, idx), angle)
  layer = jnp.round(layer * 255) / 255  # ImageMagick writes 8-bit PNG
  gray = ops.to_gray(x) if ctx.c == 3 else x
  x = p[6] * x + (1 - p[6]) * jnp.maximum(x, gray * 1.5 + 0.5)
  return x + layer + layer[:, ::-1, ::-1]


def _frost(x, idx, key, ctx):
  p = _row(ctx, idx)
  size = max(int(round(frost_lib.TEXTURE_SIZE * _FROST_PHOTO_SCALE[ctx.table]
                       * ctx.scale)), 1)
  tex = jnp.asarray(_frost_stack(size))
  b = x.shape[0]
  r = _random(key, which=('uniform', (b,)), start=('uniform', (b, 2)))
  which = jnp.floor(r['which'] * frost_lib.NUM_TEXTURES).astype(jnp.int32)
  start = jnp.floor(r['start'] * size).astype(jnp.int32)

  def crop(t, s):
    rows = jnp.mod(s[0] + jnp.arange(ctx.h), size)
    cols = jnp.mod(s[1] + jnp.arange(ctx.w), size)
    return tex[t][rows][:, cols]

  layer = jax.vmap(crop)(which, start).astype(x.dtype) / 255
  if ctx.c == 1:
    layer = ops.to_gray(layer)
  return p[0] * x + p[1] * layer


def _fog(x, idx, key, ctx):
  p = _row(ctx, idx)
  mapsize = 1 << (max(ctx.h, ctx.w) - 1).bit_length()
  b = x.shape[0]
  levels = mapsize.bit_length() - 1
  r = _random(key, **{f'l{i}': ('uniform', (3, b, 2 ** i, 2 ** i))
                      for i in range(levels)})
  plasma = ops.plasma_fractal([2 * r[f'l{i}'] - 1 for i in range(levels)],
                              p[1])
  plasma = plasma[:, :ctx.h, :ctx.w, None]
  max_val = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  return (x + p[0] * plasma) * max_val / (max_val + p[0])


# ----------------------------------------------------------------------------
# Digital.
# ----------------------------------------------------------------------------


def _brightness(x, idx, key, ctx):
  """HSV value + c, i.e. every channel scaled by V'/V (gray if V = 0)."""
  del key
  v = jnp.max(x, axis=-1, keepdims=True)
  v_new = jnp.clip(v + _row(ctx, idx), 0, 1)
  safe_v = jnp.where(v > 0, v, 1.0)
  return jnp.where(v > 0, x * (v_new / safe_v), v_new)


def _contrast(x, idx, key, ctx):
  del key
  means = jnp.mean(x, axis=(1, 2), keepdims=True)
  return (x - means) * _row(ctx, idx) + means


def _saturate(x, idx, key, ctx):
  """HSV saturation * c0 + c1 with hue and value kept (skimage semantics)."""
  del key
  p = _row(ctx, idx)
  if ctx.c == 1:
    # Gray pixels have S = 0 and hue 0 (red): RGB (V, V(1-S'), V(1-S')).
    s_new = jnp.clip(p[1], 0, 1)
    return x * (1 - (1 - ops.LUMA_WEIGHTS[0]) * s_new)
  v = jnp.max(x, axis=-1, keepdims=True)
  lo = jnp.min(x, axis=-1, keepdims=True)
  s = jnp.where(v > 0, (v - lo) / jnp.where(v > 0, v, 1.0), 0.0)
  s_new = jnp.clip(s * p[0] + p[1], 0, 1)
  colour = v - (v - x) * s_new / jnp.where(s > 0, s, 1.0)
  gray = jnp.concatenate([v, v * (1 - s_new), v * (1 - s_new)], axis=-1)
  return jnp.where(s > 0, colour, gray)


def _pixelate(x, idx, key, ctx):
  del key
  fr = _column_all(ctx)
  down_h, up_h = (ops.take_severity(a, idx) for a in _pixelate_stack(ctx.h, fr))
  down_w, up_w = (ops.take_severity(a, idx) for a in _pixelate_stack(ctx.w, fr))
  small = ops.separable(x, down_h, down_w)
  return small[:, up_h][:, :, up_w]


def _jpeg_compression(x, idx, key, ctx):
  del key
  luma, chroma = _jpeg_stack(tuple(int(q) for q in ctx.params))
  return ops.jpeg(x, ops.take_severity(luma, idx),
                  ops.take_severity(chroma, idx))


def _elastic_transform(x, idx, key, ctx):
  unit = _ELASTIC_UNIT[ctx.table] * ctx.scale
  p = _row(ctx, idx) * unit
  b, h, w = x.shape[:3]
  r = _random(key, aff=('uniform', (b, 3, 2)), field=('uniform', (b, h, w, 2)))
  # Random affine: jitter three points of a square around the centre.
  cx, cy, sq = w // 2, h // 2, min(h, w) // 3
  src = jnp.asarray([[cx + sq, cy + sq], [cx + sq, cy - sq],
                     [cx - sq, cy - sq]], jnp.float32)
  dst = src + (2 * r['aff'] - 1) * p[2]
  src_h = jnp.concatenate([src, jnp.ones((3, 1))], axis=1)  # (3, 3)
  fwd = jnp.linalg.solve(src_h, dst).transpose(0, 2, 1)  # (b, 2, 3)
  lin = fwd[:, :, :2]
  inv_lin = jnp.linalg.inv(lin)
  inv_t = -jnp.einsum('bij,bj->bi', inv_lin, fwd[:, :, 2])
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing='ij')
  sx = (inv_lin[:, 0, 0, None, None] * xx + inv_lin[:, 0, 1, None, None] * yy
        + inv_t[:, 0, None, None])
  sy = (inv_lin[:, 1, 0, None, None] * xx + inv_lin[:, 1, 1, None, None] * yy
        + inv_t[:, 1, None, None])
  x = jax.vmap(lambda im, r, c: ops.sample_bilinear(im, r, c, 'mirror'))(
      x, sy, sx)
  # Smooth random displacement field.
  sig = tuple(s * unit for s in _column(ctx, 1))
  mh = ops.take_severity(_gaussian_stack(h, sig, 3.0, 'reflect'), idx)
  mw = ops.take_severity(_gaussian_stack(w, sig, 3.0, 'reflect'), idx)
  field = ops.separable(2 * r['field'] - 1, mh, mw) * p[0]
  return jax.vmap(lambda im, r, c: ops.sample_bilinear(im, r, c, 'reflect'))(
      x, yy + field[..., 1], xx + field[..., 0])


# ----------------------------------------------------------------------------
# Spatter (water: severities with mud flag 0; mud: flag 1).
# ----------------------------------------------------------------------------


def _spatter(x, idx, key, ctx):
  p = _row(ctx, idx)
  b = x.shape[0]
  z = _random(key, z=('normal', (b, ctx.h, ctx.w, 1)))['z']
  liquid = p[0] + p[1] * z
  liquid = _blur(liquid, idx, ctx, _column(ctx, 2))[..., 0]
  liquid = jnp.where(liquid < p[3], 0.0, liquid)
  is_mud = _column(ctx, 5)
  mud_sigmas = tuple(s if m else 0.0 for s, m in zip(_column(ctx, 4), is_mud))
  trunc = 20.0 * ctx.scale

  def water():
    m = ops.water_mask(liquid, trunc) * p[4]
    colour = jnp.asarray((175, 238, 238), jnp.float32) / 255
    add = m[..., None] * colour
    if ctx.c == 1:
      add = ops.to_gray(jnp.clip(add, 0, 1))
    return x + add

  def mud():
    m = (liquid > p[3]).astype(x.dtype)[..., None]
    m = _blur(m, idx, ctx, mud_sigmas)
    m = jnp.where(m < 0.8, 0.0, m)
    colour = jnp.asarray((63, 42, 20), jnp.float32) / 255 * m
    if ctx.c == 1:
      colour = ops.to_gray(colour)
    return x * (1 - m) + colour

  return jax.lax.cond(p[5] > 0.5, mud, water)


_FUNCTIONS = {
    'gaussian_noise': _gaussian_noise,
    'shot_noise': _shot_noise,
    'impulse_noise': _impulse_noise,
    'defocus_blur': _defocus_blur,
    'glass_blur': _glass_blur,
    'motion_blur': _motion_blur,
    'zoom_blur': _zoom_blur,
    'snow': _snow,
    'frost': _frost,
    'fog': _fog,
    'brightness': _brightness,
    'contrast': _contrast,
    'elastic_transform': _elastic_transform,
    'pixelate': _pixelate,
    'jpeg_compression': _jpeg_compression,
    'speckle_noise': _speckle_noise,
    'gaussian_blur': _gaussian_blur,
    'spatter': _spatter,
    'saturate': _saturate,
}


def get_corruption(name: str, table: str = 'cifar') -> Corruption:
  """Returns the corruption `name` with the severity table `table`.

  Args:
    name: one of `ALL`.
    table: 'cifar' (CIFAR-10-C constants, reference size 32 px) or
      'imagenet' (ImageNet-C constants, reference size 224 px).

  Returns:
    A `Corruption` whose `apply(images, severity, key)` takes an NHWC float
    batch in [0, 1] (H, W >= 8; C = 1 or 3), a severity in 1..5 (Python int
    or traced integer scalar) and a `jax.random` key, and returns corrupted
    images of the same shape and dtype, clipped to [0, 1].

  Raises:
    ValueError: unknown `name` or `table`.
  """
  if name not in _FUNCTIONS:
    raise ValueError(f'Unknown corruption {name!r}; valid names: '
                     f'{", ".join(ALL)}.')
  if table not in _PARAMS:
    raise ValueError(f'Unknown table {table!r}; valid tables: '
                     f'{", ".join(TABLES)}.')
  fn = _FUNCTIONS[name]
  params = _PARAMS[table][name]

  def apply(images, severity, key=None):
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError('Expected NHWC images with 1 or 3 channels, got shape '
                       f'{images.shape}.')
    _, h, w, c = images.shape
    if h < 8 or w < 8:
      raise ValueError(f'Images must be at least 8x8 pixels, got {h}x{w}.')
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise TypeError(f'Expected float images in [0, 1], got {images.dtype}.')
    if isinstance(severity, (int, np.integer)) and not (
        1 <= severity <= NUM_SEVERITIES):
      raise ValueError(f'Severity must be in 1..{NUM_SEVERITIES}, got '
                       f'{severity}.')
    if key is None:
      if name not in DETERMINISTIC:
        raise ValueError(f'Corruption {name!r} is random and needs a key.')
      key = jax.random.key(0)
    idx = jnp.clip(jnp.asarray(severity, jnp.int32) - 1, 0,
                   NUM_SEVERITIES - 1)
    ctx = _Ctx(table, params, h, w, c,
               math.sqrt(h * w) / _REFERENCE_SIZE[table])
    out = fn(images.astype(jnp.float32), idx, key, ctx)
    return jnp.clip(out, 0.0, 1.0).astype(images.dtype)

  apply.__name__ = name
  return Corruption(name, apply)


def corrupt(images: jax.Array, name: str, severity, key: jax.Array = None,
            table: str = 'cifar') -> jax.Array:
  """Convenience: `get_corruption(name, table).apply(images, severity, key)`.

  Args:
    images: NHWC float batch in [0, 1].
    name: one of `ALL`.
    severity: 1..5 (Python int or traced integer scalar).
    key: `jax.random` key (may be None for deterministic corruptions).
    table: 'cifar' or 'imagenet'.

  Returns:
    The corrupted batch, same shape and dtype.
  """
  return get_corruption(name, table).apply(images, severity, key)
