"""Convolutions that vmap well on CPU (K stacked models in one program).

`jax.vmap` turns a convolution whose kernel has a model axis into one
grouped convolution (and its kernel gradient into a `batch_group_count`
convolution). XLA:CPU runs those far slower than K separate convolutions,
forward and backward, so a vmapped step ran slower than K sequential ones.
`unrolled_conv` computes the same convolution but, under vmap, runs one
ordinary convolution per model (forward and both gradients) inside the one
program; `for_vmap(model)` swaps it into a model on CPU.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax
from jax import custom_batching
import jax.numpy as jnp


def stack(trees):
  """Stacks pytrees of equal structure along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unrolled(fn):
  """`fn` whose vmap rule loops over the mapped axis instead of batching."""
  @custom_batching.custom_vmap
  def f(*args):
    return fn(*args)

  @f.def_vmap
  def rule(axis_size, in_batched, *args):
    outs = [f(*[a[i] if b else a for a, b in zip(args, in_batched)])
            for i in range(axis_size)]
    return stack(outs), jax.tree.map(lambda _: True, outs[0])
  return f


@functools.lru_cache(maxsize=None)
def _unrolled_conv_fn(static):
  kwargs = dict(static)

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, **kwargs)

  dn = kwargs["dimension_numbers"]
  batch_first = dn is None or getattr(dn, "lhs_spec", (0,))[0] == 0 or (
      isinstance(dn[0], str) and dn[0][0] == "N")

  @custom_batching.custom_vmap
  def forward(x, w):
    return conv(x, w)

  @forward.def_vmap
  def forward_rule(axis_size, in_batched, x, w):
    x_mapped, w_mapped = in_batched
    if not w_mapped and batch_first:  # One kernel: fold into the batch.
      y = forward(x.reshape((-1,) + x.shape[2:]), w)
      return y.reshape((axis_size, -1) + y.shape[1:]), True
    return stack([forward(x[i] if x_mapped else x, w[i] if w_mapped else w)
                  for i in range(axis_size)]), True

  backward = _unrolled(lambda x, w, g: jax.vjp(conv, x, w)[1](g))

  @jax.custom_vjp
  def f(x, w):
    return forward(x, w)
  f.defvjp(lambda x, w: (forward(x, w), (x, w)),
           lambda res, g: backward(*res, g))
  return f


def _hashable(v):
  if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
    return tuple(_hashable(e) for e in v)  # Lists -> tuples (NamedTuples kept).
  return v


def unrolled_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                  rhs_dilation=None, dimension_numbers=None,
                  feature_group_count=1, batch_group_count=1, precision=None,
                  preferred_element_type=None):
  """`lax.conv_general_dilated` that vmaps as K convolutions (see above)."""
  static = dict(window_strides=_hashable(window_strides),
                padding=_hashable(padding),
                lhs_dilation=_hashable(lhs_dilation),
                rhs_dilation=_hashable(rhs_dilation),
                dimension_numbers=_hashable(dimension_numbers),
                feature_group_count=feature_group_count,
                batch_group_count=batch_group_count, precision=precision,
                preferred_element_type=preferred_element_type)
  return _unrolled_conv_fn(tuple(sorted(static.items())))(lhs, rhs)


def for_vmap(model, backend: Optional[str] = None):
  """`model` with `unrolled_conv` on CPU (same params, same function).

  Only a model with the default `flax.linen.Conv` op is changed (an injected
  quantized conv is left alone); on GPU/TPU the batched convolution is kept.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu" or getattr(model, "conv", None) is not nn.Conv:
    return model
  return model.clone(conv=functools.partial(
      nn.Conv, conv_general_dilated=unrolled_conv))

