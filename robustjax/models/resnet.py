"""ResNet v1 family as Flax Linen modules.

Two families share one implementation:

* CIFAR-style (He et al. 2016, section 4.2): a 3x3 stem and three stages of
  basic blocks at widths (w, 2w, 4w); depth = 6n + 2 (8, 20, 32, 44, 56, 110).
  Down-sampling shortcuts are 1x1 projections ("option B").
* ImageNet-style, torchvision layout (ResNet v1.5: the stride of a bottleneck
  sits on its 3x3 conv): 7x7/2 stem + 3x3/2 max-pool and four stages; basic
  blocks for 18/34, bottlenecks for 50/101/152. Padding is symmetric as in
  torchvision, so converted torchvision weights give the same logits.

Models take float images in [0, 1], NHWC; per-channel normalisation is the
first layer (constants, not parameters, so pruning and quantization never
touch it). Convolutions, dense layers and normalisation are injectable
(`conv`, `dense`, `norm` attributes) so quantized or otherwise modified ops can
be swapped in without rewriting the model (e.g.
`robustjax.models.conv.Conv`, flax's `nn.Conv` with a CPU-fast kernel
gradient and K plain convolutions under `vmap`).

Parameter names are stable and used by pruning rules and weight converters:
`conv_init`/`bn_init` (stem), `stage{i}_block{j}` with `conv{k}`/`bn{k}` and
`proj_conv`/`proj_bn` (shortcut), and `head` (classifier).
"""

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ModuleDef = Any

# Per-channel statistics used by the input-normalisation layer.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normal(key, size: int):
  return jax.random.truncated_normal(key, -2.0, 2.0, (size,), jnp.float32)


def lecun_normal(key, shape, dtype=jnp.float32):
  """Flax's default kernel init, with few compilations (the models' default).

  The same distribution as `nn.initializers.lecun_normal()` (truncated
  normal on [-2, 2] sigma, variance 1 / fan_in, fan_in = every axis but the
  last), but the draw is made at a power-of-two length and then cut to
  `shape`, so all kernels of all architectures share a handful of compiled
  samplers: compiling a sampler for each new shape made up a large part of
  a small model's first-use compile time on XLA:CPU.
  """
  shape = tuple(int(d) for d in shape)
  size = math.prod(shape)
  fan_in = math.prod(shape[:-1]) if len(shape) > 1 else size
  std = math.sqrt(1.0 / max(fan_in, 1)) / 0.87962566103423978
  flat = _truncated_normal(key, max(1024, 1 << (size - 1).bit_length()))
  if isinstance(flat, jax.core.Tracer):  # Under jit / eval_shape.
    return (flat[:size].reshape(shape) * jnp.float32(std)).astype(dtype)
  # Eager: cut, reshape and scale on the host (the same float32 rounding
  # as XLA's) rather than compile one small program per kernel shape.
  kernel = np.asarray(flat)[:size].reshape(shape) * np.float32(std)
  return jnp.asarray(kernel.astype(jnp.dtype(dtype)))


class Normalize(nn.Module):
  """(x - mean) / std with constant per-channel statistics."""
  mean: Sequence[float]
  std: Sequence[float]

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    if mean.size not in (1, channels) or std.size not in (1, channels):
      raise ValueError(
          f"Normalisation statistics have {mean.size}/{std.size} channels but "
          f"the images have {channels}; set model.mean/model.std in the config "
          "to one value per image channel.")
    return (x - mean) / std


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name="conv1")(x)
    y = self.norm(name="bn1")(y)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)),
                  name="conv2")(y)
    y = self.norm(name="bn2")(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           padding="VALID", name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return self.act(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (1, 1), padding="VALID", name="conv1")(x)
    y = self.norm(name="bn1")(y)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name="conv2")(y)
    y = self.norm(name="bn2")(y)
    y = self.act(y)
    y = self.conv(self.filters * self.expansion, (1, 1), padding="VALID",
                  name="conv3")(y)
    y = self.norm(name="bn3")(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * self.expansion, (1, 1),
                           (self.strides, self.strides), padding="VALID",
                           name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return self.act(residual + y)


class ResNet(nn.Module):
  """ResNet v1.

  Attributes:
    stage_sizes: number of blocks per stage.
    block_cls: `BasicBlock` or `BottleneckBlock`.
    num_classes: size of the classifier head.
    width: channels of the first stage (16 CIFAR-style, 64 ImageNet-style).
    stem: "cifar" (3x3/1 conv) or "imagenet" (7x7/2 conv + 3x3/2 max-pool).
    mean, std: per-channel input statistics of the normalisation layer.
    conv, dense, norm: injectable ops; defaults are Flax's
      (`robustjax.models.conv.Conv` is a drop-in `conv` for CPU training).
    dtype: computation dtype.
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  width: int = 64
  stem: str = "imagenet"
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  conv: ModuleDef = nn.Conv
  dense: ModuleDef = nn.Dense
  norm: ModuleDef = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Returns logits for images `x` in [0, 1], NHWC.

    Args:
      x: float images, [batch, height, width, channels], values in [0, 1].
      train: batch statistics (and their update) instead of running ones.

    Returns:
      float32 logits, [batch, num_classes].
    """
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype,
                             kernel_init=lecun_normal)
    norm = functools.partial(self.norm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = Normalize(self.mean, self.std, name="normalize")(
        jnp.asarray(x, self.dtype))
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
               name="conv_init")(x)
      x = norm(name="bn_init")(x)
      x = nn.relu(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":
      x = conv(self.width, (3, 3), padding=((1, 1), (1, 1)),
               name="conv_init")(x)
      x = norm(name="bn_init")(x)
      x = nn.relu(x)
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; use 'cifar' or "
                       "'imagenet'.")
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.width * 2**i, strides=strides, conv=conv,
                           norm=norm, name=f"stage{i + 1}_block{j + 1}")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = self.dense(self.num_classes, dtype=self.dtype,
                   kernel_init=lecun_normal, name="head")(x)
    return jnp.asarray(x, jnp.float32)
