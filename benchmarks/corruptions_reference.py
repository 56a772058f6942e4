"""Reference side of `corruptions_benchmark.py` (runs in the ic venv).

Not a library module: `corruptions_benchmark.py` starts it with
`--ic_python` (numpy 1.26, scikit-image 0.20, OpenCV 4.10, Pillow,
imagecorruptions 1.1.2) and exchanges arrays through .npz files.

It does three things on the images it is given (uint8 NHWC):

1. `crashes`: calls every `imagecorruptions.corrupt` name once, unmodified,
   and records the exception of those that fail.
2. `timing`: per-image throughput of `imagecorruptions.corrupt` at one
   severity (single process; the two blurs that crash on `multichannel` are
   timed with skimage's `gaussian` wrapped to translate the argument).
3. `outputs`: all five severities for two implementations of the reference:
   * 'ic': imagecorruptions itself (ImageNet constants at any size);
   * 'oracle': the algorithms of Hendrycks & Dietterich's `make_cifar_c.py` /
     `make_imagenet_c.py`, written here with the same libraries and taking
     the severity table as input, so the CIFAR table can be measured too.
     Differences from the original scripts: ImageMagick motion blur (Wand,
     not installed) is imagecorruptions' NumPy port `_motion_blur`; the
     frost photographs are the ones shipped with imagecorruptions.
"""

import argparse
import io
import json
import sys
import time
import traceback
import warnings

import cv2
import imagecorruptions
from imagecorruptions import corruptions as icc
import numpy as np
from PIL import Image
from scipy import ndimage
import skimage as sk
from skimage import filters

warnings.simplefilter('ignore')


def _gaussian_compat(image, sigma=1, multichannel=None, **kw):
  """skimage.filters.gaussian accepting the removed `multichannel` flag."""
  if multichannel:
    kw['channel_axis'] = -1
  return filters.gaussian(image, sigma=sigma, **kw)


# ----------------------------------------------------------------------------
# The reference algorithms, parameterised by the severity constants `c`.
# x: uint8 (H, W, 3); returns float in [0, 255].
# ----------------------------------------------------------------------------


def _centre_zoom(img, zoom):
  """make_*_c.py `clipped_zoom`: crop centre, scipy zoom(order=1), trim."""
  h, w = img.shape[:2]
  ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
  top, left = (h - ch) // 2, (w - cw) // 2
  out = ndimage.zoom(img[top:top + ch, left:left + cw], (zoom, zoom, 1),
                     order=1)
  th, tw = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
  return out[th:th + h, tw:tw + w]


def gaussian_noise(x, c, rng):
  x = x / 255.
  return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng):
  x = x / 255.
  return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c, rng):
  x = sk.util.random_noise(x / 255., mode='s&p', amount=c,
                           seed=int(rng.integers(1 << 31)))
  return np.clip(x, 0, 1) * 255


def speckle_noise(x, c, rng):
  x = x / 255.
  return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, c, rng):
  del rng
  return np.clip(filters.gaussian(x / 255., sigma=c, channel_axis=-1),
                 0, 1) * 255


def glass_blur(x, c, rng):
  sigma, delta, iters = c[0], int(c[1]), int(c[2])
  x = np.uint8(filters.gaussian(x / 255., sigma=sigma, channel_axis=-1) * 255)
  h, w = x.shape[:2]
  for _ in range(iters):
    for r in range(h - delta, delta, -1):
      for s in range(w - delta, delta, -1):
        dx, dy = rng.integers(-delta, delta, size=(2,))
        rp, sp = r + dy, s + dx
        x[r, s], x[rp, sp] = x[rp, sp], x[r, s]  # (3,) views: as reference
  return np.clip(filters.gaussian(x / 255., sigma=sigma, channel_axis=-1),
                 0, 1) * 255


def defocus_blur(x, c, rng):
  del rng
  kernel = icc.disk(radius=c[0], alias_blur=c[1])
  x = x / 255.
  out = np.stack([cv2.filter2D(x[..., d], -1, kernel) for d in range(3)], -1)
  return np.clip(out, 0, 1) * 255


def motion_blur(x, c, rng):
  out = icc._motion_blur(x, radius=c[0], sigma=c[1],  # pylint: disable=protected-access
                         angle=rng.uniform(-45, 45))
  return np.clip(out, 0, 255)


def zoom_blur(x, c, rng):
  del rng
  x = (x / 255.).astype(np.float32)
  zooms = np.arange(*c)
  out = np.zeros_like(x)
  for z in zooms:
    out += _centre_zoom(x, z)
  return np.clip((x + out) / (len(zooms) + 1), 0, 1) * 255


def snow(x, c, rng):
  x = np.array(x, dtype=np.float32) / 255.
  h, w = x.shape[:2]
  layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
  layer = _centre_zoom(layer[..., None], c[2])[..., 0]
  layer[layer < c[3]] = 0
  layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # PIL 'L' image
  layer = icc._motion_blur(layer / 255., radius=c[4], sigma=c[5],  # pylint: disable=protected-access
                           angle=rng.uniform(-135, -45))
  layer = (np.round(layer * 255).astype(np.uint8) / 255.)[..., None]
  gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
  x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
  return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


_FROST = None


def frost(x, c, rng, photo_scale=1.0):
  global _FROST
  if _FROST is None:
    import os  # pylint: disable=g-import-not-at-top
    d = os.path.join(os.path.dirname(icc.__file__), 'frost')
    _FROST = [cv2.imread(os.path.join(d, f)) for f in (
        'frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg', 'frost5.jpg')]
  f = _FROST[rng.integers(5)]
  if photo_scale != 1.0:
    f = cv2.resize(f, (0, 0), fx=photo_scale, fy=photo_scale)
  h, w = x.shape[:2]
  if f.shape[0] <= h or f.shape[1] <= w:  # as imagecorruptions: upscale
    s = 1.1 * max(h / f.shape[0], w / f.shape[1])
    f = cv2.resize(f, (int(np.ceil(f.shape[1] * s)),
                       int(np.ceil(f.shape[0] * s))),
                   interpolation=cv2.INTER_CUBIC)
  r0 = rng.integers(0, f.shape[0] - h)
  s0 = rng.integers(0, f.shape[1] - w)
  f = f[r0:r0 + h, s0:s0 + w][..., [2, 1, 0]]
  return np.clip(c[0] * x + c[1] * f, 0, 255)


def fog(x, c, rng):
  h, w = x.shape[:2]
  mapsize = 1 << (max(h, w) - 1).bit_length()
  np.random.seed(int(rng.integers(1 << 31)))  # plasma_fractal uses np.random
  plasma = icc.plasma_fractal(mapsize=mapsize, wibbledecay=c[1])[:h, :w]
  x = x / 255.
  max_val = x.max()
  x = x + c[0] * plasma[..., None]
  return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def brightness(x, c, rng):
  del rng
  x = sk.color.rgb2hsv(x / 255.)
  x[..., 2] = np.clip(x[..., 2] + c, 0, 1)
  return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def contrast(x, c, rng):
  del rng
  x = x / 255.
  means = x.mean(axis=(0, 1), keepdims=True)
  return np.clip((x - means) * c + means, 0, 1) * 255


def saturate(x, c, rng):
  del rng
  x = sk.color.rgb2hsv(x / 255.)
  x[..., 1] = np.clip(x[..., 1] * c[0] + c[1], 0, 1)
  return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def jpeg_compression(x, c, rng):
  del rng
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, 'JPEG', quality=int(c))
  return np.asarray(Image.open(buf), np.float64)


def pixelate(x, c, rng):
  del rng
  h, w = x.shape[:2]
  img = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
  return np.asarray(img.resize((w, h), Image.BOX), np.float64)


def elastic_transform(x, c, rng):
  """c = (alpha, sigma, affine) in pixels."""
  image = np.array(x, dtype=np.float32) / 255.
  h, w = image.shape[:2]
  center = np.float32((h, w)) // 2
  sq = min(h, w) // 3
  pts1 = np.float32([center + sq, [center[0] + sq, center[1] - sq],
                     center - sq])
  pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
  m = cv2.getAffineTransform(pts1, pts2)
  image = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
  dx = (filters.gaussian(rng.uniform(-1, 1, size=(h, w)), c[1],
                         mode='reflect', truncate=3) * c[0]).astype(np.float32)
  dy = (filters.gaussian(rng.uniform(-1, 1, size=(h, w)), c[1],
                         mode='reflect', truncate=3) * c[0]).astype(np.float32)
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  out = np.stack([ndimage.map_coordinates(
      image[..., z], [yy + dy, xx + dx], order=1, mode='reflect')
                  for z in range(3)], -1)
  return np.clip(out, 0, 1) * 255


def spatter(x, c, rng):
  x = np.array(x, dtype=np.float32) / 255.
  liquid = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
  liquid = filters.gaussian(liquid, sigma=c[2])
  liquid[liquid < c[3]] = 0
  if c[5] == 0:
    liquid = (liquid * 255).astype(np.uint8)
    dist = 255 - cv2.Canny(liquid, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid * dist
    m = m / max(m.max(), 1e-12) * c[4]
    colour = np.array([175, 238, 238]) / 255.
    return np.clip(x + m[..., None] * colour, 0, 1) * 255
  m = np.where(liquid > c[3], 1, 0)
  m = filters.gaussian(m.astype(np.float32), sigma=c[4])
  m[m < 0.8] = 0
  colour = np.array([63, 42, 20]) / 255. * m[..., None]
  return np.clip(x * (1 - m[..., None]) + colour, 0, 1) * 255


ORACLE = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
    motion_blur, zoom_blur, snow, frost, fog, brightness, contrast,
    elastic_transform, pixelate, jpeg_compression, speckle_noise,
    gaussian_blur, spatter, saturate)}


def oracle(name, x, c, rng, table):
  if name == 'frost':
    return frost(x, c, rng, photo_scale=0.2 if table == 'cifar' else 1.0)
  if name == 'elastic_transform':
    unit = 32.0 if table == 'cifar' else 244.0
    return elastic_transform(x, [v * unit for v in c], rng)
  return ORACLE[name](x, c, rng)


# ----------------------------------------------------------------------------


def find_crashes(image):
  crashes = {}
  for name in imagecorruptions.get_corruption_names('all'):
    try:
      imagecorruptions.corrupt(image, severity=3, corruption_name=name)
    except Exception as e:  # pylint: disable=broad-except
      crashes[name] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
  return crashes


def time_ic(images, names, severity, budget_s):
  """Per-image seconds of imagecorruptions.corrupt (patched blurs)."""
  icc.gaussian = _gaussian_compat
  np.random.seed(0)
  out = {}
  for name in names:
    imagecorruptions.corrupt(images[0], severity=severity,
                             corruption_name=name)  # warm-up
    n, start = 0, time.perf_counter()
    for img in images:
      imagecorruptions.corrupt(img, severity=severity, corruption_name=name)
      n += 1
      if time.perf_counter() - start > budget_s:
        break
    out[name] = (time.perf_counter() - start) / n
    print(f'  ic {name:18s} {1e3 * out[name]:9.2f} ms/img ({n} imgs)',
          file=sys.stderr, flush=True)
  return out


def outputs(images, names, params, table, kinds):
  icc.gaussian = _gaussian_compat
  res = {}
  for name in names:
    for kind in kinds:
      ys = np.zeros((5,) + images.shape, np.uint8)
      for s in range(5):
        rng = np.random.default_rng(1000 * s + 7)
        np.random.seed(1000 * s + 7)
        for i, img in enumerate(images):
          if kind == 'ic':
            y = imagecorruptions.corrupt(img, severity=s + 1,
                                         corruption_name=name)
          else:
            y = oracle(name, img, params[name][s], rng, table)
          ys[s, i] = np.uint8(np.clip(y, 0, 255))
      res[f'{kind}/{name}'] = ys
    print(f'  outputs {table} {name}', file=sys.stderr, flush=True)
  return res


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--task', choices=('crashes', 'timing', 'outputs'),
                 required=True)
  p.add_argument('--images', required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--names', default='')
  p.add_argument('--severity', type=int, default=3)
  p.add_argument('--budget_s', type=float, default=20.0)
  p.add_argument('--params', default='')
  p.add_argument('--table', default='imagenet')
  p.add_argument('--kinds', default='ic,oracle')
  a = p.parse_args()
  images = np.load(a.images)['images']
  names = a.names.split(',') if a.names else list(ORACLE)
  if a.task == 'crashes':
    with open(a.out, 'w') as f:
      json.dump(find_crashes(images[0]), f)
  elif a.task == 'timing':
    with open(a.out, 'w') as f:
      json.dump(time_ic(images, names, a.severity, a.budget_s), f)
  else:
    with open(a.params) as f:
      params = json.load(f)
    np.savez_compressed(a.out, **outputs(images, names, params, a.table,
                                         a.kinds.split(',')))


if __name__ == '__main__':
  try:
    main()
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    sys.exit(1)
