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

Layout: `tables` holds the severity tables, `common` what every corruption
function shares (per-call context, random draws); the functions live in
`noise`, `blur`, `weather` and `digital`, and in `jpeg`, `spatter` and
`frost` together with their own machinery; `ops` (traced) and `filters`
(static NumPy) are the building blocks.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.robustness.corruptions import blur
from robustjax.robustness.corruptions import common
from robustjax.robustness.corruptions import digital
from robustjax.robustness.corruptions import frost
from robustjax.robustness.corruptions import jpeg
from robustjax.robustness.corruptions import noise
from robustjax.robustness.corruptions import spatter
from robustjax.robustness.corruptions import tables
from robustjax.robustness.corruptions import weather

BENCHMARK = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
             'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
             'brightness', 'contrast', 'elastic_transform', 'pixelate',
             'jpeg_compression')
EXTRA = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
ALL = BENCHMARK + EXTRA
# Names that stand for a set of corruptions where a config lists them
# (`evals.corruptions.names`): configs name the set instead of copying it.
PRESETS = {'benchmark': BENCHMARK}
NUM_SEVERITIES = 5
TABLES = tables.TABLES

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


# name -> fn(x, idx, key, ctx) (see `common`).
_FUNCTIONS = {
    'gaussian_noise': noise.gaussian_noise,
    'shot_noise': noise.shot_noise,
    'impulse_noise': noise.impulse_noise,
    'defocus_blur': blur.defocus_blur,
    'glass_blur': blur.glass_blur,
    'motion_blur': blur.motion_blur,
    'zoom_blur': blur.zoom_blur,
    'snow': weather.snow,
    'frost': frost.frost,
    'fog': weather.fog,
    'brightness': digital.brightness,
    'contrast': digital.contrast,
    'elastic_transform': digital.elastic_transform,
    'pixelate': digital.pixelate,
    'jpeg_compression': jpeg.jpeg_compression,
    'speckle_noise': noise.speckle_noise,
    'gaussian_blur': blur.gaussian_blur,
    'spatter': spatter.spatter,
    'saturate': digital.saturate,
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
  if table not in tables.PARAMS:
    raise ValueError(f'Unknown table {table!r}; valid tables: '
                     f'{", ".join(TABLES)}.')
  fn = _FUNCTIONS[name]
  params = tables.PARAMS[table][name]
  if name == 'frost':
    # Generate the textures (NumPy, cached) now rather than inside the first
    # trace, where a study's log would count them as compile time.
    frost.frost_textures()

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
    ctx = common.Ctx(table, params, h, w, c,
                     math.sqrt(h * w) / tables.REFERENCE_SIZE[table])
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
