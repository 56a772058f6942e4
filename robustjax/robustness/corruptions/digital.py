"""Digital corruptions: brightness, contrast, saturate, pixelate, elastic.

Each `fn(x, idx, key, ctx)` follows the convention of `common`
(jpeg_compression lives in `jpeg`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import filters
from robustjax.robustness.corruptions import ops
from robustjax.robustness.corruptions import tables

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
    down[i, :small] = filters.pil_box_resize_matrix(n, small)
    up[i] = np.argmax(filters.pil_box_resize_matrix(small, n), axis=1)
  return down, up


def brightness(x, idx, key, ctx):
  """HSV value + c, i.e. every channel scaled by V'/V (gray if V = 0)."""
  del key
  v = jnp.max(x, axis=-1, keepdims=True)
  v_new = jnp.clip(v + common.row(ctx, idx), 0, 1)
  safe_v = jnp.where(v > 0, v, 1.0)
  return jnp.where(v > 0, x * (v_new / safe_v), v_new)


def contrast(x, idx, key, ctx):
  """Scales each image's deviation from its per-channel mean by c."""
  del key
  means = jnp.mean(x, axis=(1, 2), keepdims=True)
  return (x - means) * common.row(ctx, idx) + means


def saturate(x, idx, key, ctx):
  """HSV saturation * c0 + c1 with hue and value kept (skimage semantics)."""
  del key
  p = common.row(ctx, idx)
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


def pixelate(x, idx, key, ctx):
  """Pillow BOX resize down by the factor c and back up."""
  del key
  fr = common.column_all(ctx)
  down_h, up_h = (ops.take_severity(a, idx)
                  for a in _pixelate_stack(ctx.h, fr))
  down_w, up_w = (ops.take_severity(a, idx)
                  for a in _pixelate_stack(ctx.w, fr))
  small = ops.separable(x, down_h, down_w)
  return small[:, up_h][:, :, up_w]


def elastic_transform(x, idx, key, ctx):
  """Random affine warp, then a smoothed random displacement field."""
  unit = tables.ELASTIC_UNIT[ctx.table] * ctx.scale
  p = common.row(ctx, idx) * unit
  b, h, w = x.shape[:3]
  r = common.random(key, aff=('uniform', (b, 3, 2)),
                    field=('uniform', (b, h, w, 2)))
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
  sig = tuple(s * unit for s in common.column(ctx, 1))
  mh = ops.take_severity(common.gaussian_stack(h, sig, 3.0, 'reflect'), idx)
  mw = ops.take_severity(common.gaussian_stack(w, sig, 3.0, 'reflect'), idx)
  field = ops.separable(2 * r['field'] - 1, mh, mw) * p[0]
  return jax.vmap(lambda im, r, c: ops.sample_bilinear(im, r, c, 'reflect'))(
      x, yy + field[..., 1], xx + field[..., 0])
