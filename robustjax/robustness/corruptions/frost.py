"""The frost corruption and its procedural frost textures.

The reference (Hendrycks & Dietterich 2019) blends the image with a random
crop of one of five frost photographs. We do not ship or download those
photographs; instead this module *generates* five tileable frost-like
textures with NumPy from fixed seeds (deterministic, generated once per
process, then cached):

* a low-frequency 1/f^beta "cloudy ice" background,
* feather-like ice crystals: random stems with side branches at +-55..65
  degrees and sub-branches, splatted with bilinear weights (periodically, so
  the texture tiles),
* fine grain noise,

mapped to RGB so that each texture's per-channel mean and standard deviation
match those measured on the corresponding reference photograph (numbers in
`_PHOTO_STATS`; the reference picks `frost1..frost5`, and frost2 and frost3
are the same photograph, so two of our textures share its colour statistics).
`frost(x, idx, key, ctx)` follows the convention of `common`.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import filters
from robustjax.robustness.corruptions import ops
from robustjax.robustness.corruptions import tables

TEXTURE_SIZE = 512
NUM_TEXTURES = 5

# Per-channel RGB mean and standard deviation of the reference photographs
# frost1.png .. frost5.jpg (measured with OpenCV on the files shipped with
# imagecorruptions 1.1.2; see docs/corruptions.md).
_PHOTO_STATS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.529), (0.174, 0.170, 0.163)),
)

# Structure knobs per texture: (number of crystals, mean stem length in px,
# background weight, crystal weight, grain weight, seed). The grain weights
# bring the power-spectrum slopes near the photographs' (docs/corruptions.md).
_STYLES = (
    (260, 40.0, 0.65, 0.35, 0.55, 11),   # bluish crinkled ice, small crystals
    (420, 55.0, 0.25, 0.75, 0.15, 12),   # dense white feathers
    (420, 55.0, 0.25, 0.75, 0.15, 13),   # same look, different layout
    (650, 28.0, 0.35, 0.65, 0.45, 14),   # fine, busy crystals
    (140, 90.0, 0.40, 0.60, 0.15, 15),   # large ferns on a darker pane
)


def _fractal_noise(rng: np.random.Generator, n: int, beta: float
                   ) -> np.ndarray:
  """Periodic noise with power spectrum ~ 1/f^beta, standardised."""
  fy = np.fft.fftfreq(n)[:, None]
  fx = np.fft.fftfreq(n)[None, :]
  f = np.sqrt(fx ** 2 + fy ** 2)
  f[0, 0] = 1.0
  amp = f ** (-beta / 2)
  amp[0, 0] = 0.0
  phase = rng.uniform(0, 2 * np.pi, (n, n))
  field = np.real(np.fft.ifft2(amp * np.exp(1j * phase)))
  return (field - field.mean()) / field.std()


def _gaussian_blur_periodic(img: np.ndarray, sigma: float) -> np.ndarray:
  n = img.shape[0]
  f = np.fft.fftfreq(n)
  g = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
  return np.real(np.fft.ifft2(np.fft.fft2(img) * g))


def _crystals(rng: np.random.Generator, n: int, count: int,
              length: float) -> np.ndarray:
  """Accumulated intensity of feather-like crystals (periodic)."""
  segs = []  # (x0, y0, angle, length, intensity)
  for _ in range(count):
    x0, y0 = rng.uniform(0, n, 2)
    ang = rng.uniform(0, 2 * np.pi)
    stem = length * rng.lognormal(0.0, 0.45)
    inten = rng.uniform(0.5, 1.0)
    segs.append((x0, y0, ang, stem, inten))
    # Side branches, shorter towards the tip, on both sides.
    n_br = int(stem / rng.uniform(2.5, 5.0))
    spread = math.radians(rng.uniform(55, 65))
    for k in range(1, n_br):
      t = k / n_br
      bx = x0 + t * stem * math.cos(ang)
      by = y0 + t * stem * math.sin(ang)
      blen = stem * rng.uniform(0.15, 0.35) * (1 - 0.7 * t)
      for side in (-1, 1):
        if rng.uniform() < 0.85:
          ba = ang + side * spread + rng.normal(0, 0.08)
          segs.append((bx, by, ba, blen, 0.7 * inten))
          if blen > 8 and rng.uniform() < 0.5:  # one sub-branch
            sx = bx + 0.5 * blen * math.cos(ba)
            sy = by + 0.5 * blen * math.sin(ba)
            segs.append((sx, sy, ba - side * spread, 0.4 * blen,
                         0.5 * inten))
  segs = np.asarray(segs)
  steps = np.maximum(np.ceil(segs[:, 3] * 2).astype(np.int64), 1)
  idx = np.repeat(np.arange(len(segs)), steps)
  t = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps))
  t = t / np.repeat(steps, steps)
  px = segs[idx, 0] + t * segs[idx, 3] * np.cos(segs[idx, 2])
  py = segs[idx, 1] + t * segs[idx, 3] * np.sin(segs[idx, 2])
  val = segs[idx, 4] * (1 - 0.5 * t)  # fade towards the tips
  acc = np.zeros(n * n)
  x0 = np.floor(px)
  y0 = np.floor(py)
  fx = px - x0
  fy = py - y0
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      flat = (np.mod(y0 + dy, n) * n + np.mod(x0 + dx, n)).astype(np.int64)
      acc += np.bincount(flat, weights=val * wy * wx, minlength=n * n)
  return acc.reshape(n, n)


@functools.lru_cache(maxsize=None)
def frost_textures() -> np.ndarray:
  """The five procedural frost textures.

  Returns:
    `(NUM_TEXTURES, TEXTURE_SIZE, TEXTURE_SIZE, 3)` float32 RGB in [0, 1];
    each texture tiles periodically.
  """
  n = TEXTURE_SIZE
  out = np.zeros((NUM_TEXTURES, n, n, 3), np.float32)
  for i, ((mean, std), (count, length, w_bg, w_cr, w_gr, seed)) in enumerate(
      zip(_PHOTO_STATS, _STYLES)):
    rng = np.random.default_rng(seed)
    bg = _fractal_noise(rng, n, beta=2.6)
    cr = _crystals(rng, n, count, length)
    cr = _gaussian_blur_periodic(cr, 0.6)
    cr = 1 - np.exp(-1.5 * cr)
    cr = (cr - cr.mean()) / (cr.std() + 1e-8)
    grain = _gaussian_blur_periodic(rng.normal(size=(n, n)), 0.7)
    grain /= grain.std()
    lum = w_bg * bg + w_cr * cr + w_gr * grain
    lum = (lum - lum.mean()) / lum.std()
    # Slight colour variation across channels, as on real ice.
    tint = 0.15 * _fractal_noise(rng, n, beta=3.0)
    for ch in range(3):
      out[i, :, :, ch] = mean[ch] + std[ch] * (lum + (ch - 1) * tint)
  return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _frost_stack(size):
  """Frost textures resampled to `size` px (OpenCV INTER_LINEAR), uint8."""
  tex = frost_textures()
  mat = filters.bilinear_resize_matrix(tex.shape[1], size, mode='wrap')
  out = np.einsum('hi,kijc->khjc', mat, tex, optimize=True)
  out = np.einsum('wj,khjc->khwc', mat, out, optimize=True)
  return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def frost(x, idx, key, ctx):
  """Blends the image with a random crop of a random frost texture."""
  p = common.row(ctx, idx)
  size = max(int(round(TEXTURE_SIZE * tables.FROST_PHOTO_SCALE[ctx.table]
                       * ctx.scale)), 1)
  tex = jnp.asarray(_frost_stack(size))
  b = x.shape[0]
  r = common.random(key, which=('uniform', (b,)), start=('uniform', (b, 2)))
  which = jnp.floor(r['which'] * NUM_TEXTURES).astype(jnp.int32)
  start = jnp.floor(r['start'] * size).astype(jnp.int32)

  def crop(t, s):
    rows = jnp.mod(s[0] + jnp.arange(ctx.h), size)
    cols = jnp.mod(s[1] + jnp.arange(ctx.w), size)
    return tex[t][rows][:, cols]

  layer = jax.vmap(crop)(which, start).astype(x.dtype) / 255
  if ctx.c == 1:
    layer = ops.to_gray(layer)
  return p[0] * x + p[1] * layer
