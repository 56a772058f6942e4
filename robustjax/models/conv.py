"""Convolutions that train fast on XLA:CPU, behind the models' injectable `conv`.

On XLA:CPU the slow part of a ResNet training step is the
gradient of the loss with respect to the convolution *kernels*. XLA computes
it as one more convolution whose window is the whole feature map (e.g.
32 x 32 for a CIFAR stage-1 layer), with both operands transposed to a
channels-major layout first. By default XLA:CPU hands that convolution to
YNNPACK, which runs it several times slower than the forward convolution of
the same FLOPs, and the transposes re-compute the BatchNorm / ReLU / residual
chain that produced the activations.

`conv_general_dilated` here has the signature of `lax.conv_general_dilated`
and computes the same forward convolution and input gradient. On CPU:

* The forward pass puts its input behind an optimization barrier, meant to
  make the backward pass read it instead of re-computing it. On XLA:CPU
  that does not hold: no barrier is left in the compiled program, and
  barriers after a ResNet's ReLUs left the chains fused into the
  kernel-gradient transposes; what stops the re-computation there is
  YNNPACK's elementwise fusion,
  which the trainer turns on per program for large activations
  (`robustjax.cpu_setup.train_step_compiler_options`).
* The kernel gradient: if YNNPACK convolutions are off
  (`robustjax.cpu_setup.configure_host_devices()` turns them off, as the
  launchers do), XLA's own kernel-gradient convolution, which is then fast;
  if they are on (a process that did not call it), one matrix product per
  kernel tap, `dW[i, j] = X_ij^T @ dY`, with `X_ij` the (strided) input
  shifted by tap (i, j) and `dY` the output gradient, both flattened to
  [batch * height * width, channels]: plain GEMMs in the NHWC layout the
  activations already have (faster to run, slower to compile).
* Under `jax.vmap` over K models (stacked kernels) it runs K plain
  convolutions instead of one grouped convolution (which XLA:CPU runs far
  slower), forward and backward.

On other platforms (GPU, TPU) it lowers to exactly `lax.conv_general_dilated`
(the choice is made per platform when the program is lowered, via
`lax.platform_dependent`).

`Conv` is flax's `nn.Conv` with this function: same parameters, same names,
same initialisation, so checkpoints and pruning rules are unaffected; pass it
as a model's `conv` (`get_model(..., conv=conv.Conv)`). It is not the
default: with YNNPACK convolutions off (`configure_host_devices`), its gain
per training step over `nn.Conv` is within noise, while its wrappers make
attack programs slower to compile. Its clear uses: training in a process
where YNNPACK convolutions are on, and K models vmapped on CPU.
When only input gradients are taken (attacks), it skips the barrier and
the kernel gradient (`symbolic_zeros`).

Unsupported configurations (dilation, feature or batch groups, other layouts
than NHWC/HWIO, kernels larger than `MAX_TAPS` taps) fall back to
`lax.conv_general_dilated` everywhere.
"""

import functools
import os
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
from jax import custom_batching
from jax import lax
import jax.numpy as jnp

# Largest kernel (taps = height * width) handled with per-tap GEMMs; larger
# ones (e.g. a 7x7 ImageNet stem) keep XLA's kernel gradient (not measured).
MAX_TAPS = 9

_NHWC = ("NHWC", "HWIO", "NHWC")
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"

Padding = Union[str, Sequence[Tuple[int, int]]]


def is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False  # lax's default is NCHW / OIHW.
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers(
        (1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  return tuple(dimension_numbers) == _NHWC


def supported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
              feature_group_count, batch_group_count,
              preferred_element_type) -> bool:
  """Whether a convolution is one the CPU reformulations handle: NHWC /
  HWIO, 2-D, no dilation, no groups, no preferred element type (also used
  by `robustjax.models.input_grad`)."""
  dilated = any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
  return (lhs.ndim == 4 and rhs.ndim == 4 and is_nhwc(dimension_numbers)
          and not dilated and feature_group_count == 1
          and batch_group_count == 1 and preferred_element_type is None)


def explicit_pads(padding, lhs, rhs, strides) -> Tuple[Tuple[int, int], ...]:
  """`padding` ("SAME", "VALID" or pairs) as int (lo, hi) pairs, NHWC/HWIO."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides,
                                  padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _kernel_grad_by_taps(x, dy, kernel_shape, strides, pads, precision):
  """dW[i, j] = X_ij^T @ dY for every tap; NHWC in, HWIO out."""
  kh, kw, _, _ = kernel_shape
  sh, sw = strides
  n, ho, wo, _ = dy.shape
  rows = n * ho * wo
  dy2 = dy.reshape(rows, dy.shape[-1])
  (pt, pb), (pl, pr) = pads
  # Negative padding (cropping) is legal in lax; lax.pad handles both signs.
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
  taps = []
  for i in range(kh):
    for j in range(kw):
      xs = lax.slice(xp, (0, i, j, 0),
                     (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                      xp.shape[-1]), (1, sh, sw, 1))
      taps.append(lax.dot_general(
          xs.reshape(rows, xs.shape[-1]), dy2, (((0,), (0,)), ((), ())),
          precision=precision))
  return jnp.stack(taps).reshape(kernel_shape).astype(dy.dtype)


def ynn_convolutions_enabled(xla_flags: Optional[str] = None) -> bool:
  """Whether XLA:CPU hands convolutions to YNNPACK (its default).

  Args:
    xla_flags: the XLA flags; default: the `XLA_FLAGS` environment variable
      (which XLA reads once, when JAX starts its backends).

  Returns:
    False if `--xla_cpu_experimental_ynn_fusion_type` removes
    `individual_convolution` (as `cpu_setup.configure_host_devices` does).
  """
  if xla_flags is None:
    xla_flags = os.environ.get("XLA_FLAGS", "")
  value = None
  for flag in xla_flags.split():
    if flag.startswith(_YNN_FLAG + "="):
      value = flag.split("=", 1)[1]
  if value is None:
    return True
  items = [v for v in value.split(",") if v]
  if any(v[0] in "+-" for v in items):
    return "-individual_convolution" not in items
  return "individual_convolution" in items


@functools.lru_cache(maxsize=None)
def _cpu_conv(strides, pads, precision, taps):
  """The CPU path for one static configuration (a custom_vjp function).

  `taps`: kernel gradient as per-tap GEMMs (else XLA's own convolution).
  """

  def conv(x, w):
    return lax.conv_general_dilated(x, w, strides, pads,
                                    dimension_numbers=_NHWC,
                                    precision=precision)

  @custom_batching.custom_vmap
  def forward(x, w):
    return conv(x, w)

  @forward.def_vmap
  def forward_rule(axis_size, in_batched, x, w):
    x_mapped, w_mapped = in_batched
    if not w_mapped:  # One kernel for all: fold the mapped axis into batch.
      y = forward(x.reshape((-1,) + x.shape[2:]), w)
      return y.reshape((axis_size, -1) + y.shape[1:]), True
    return jnp.stack([forward(x[i] if x_mapped else x, w[i])
                      for i in range(axis_size)]), True

  def input_grad(x, w, dy):
    return jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]

  def kernel_grad(x, w, dy):
    if taps:
      return _kernel_grad_by_taps(x, dy, w.shape, strides, pads, precision)
    return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]

  @custom_batching.custom_vmap
  def backward(x, w, dy):
    return input_grad(x, w, dy), kernel_grad(x, w, dy)

  @backward.def_vmap
  def backward_rule(axis_size, in_batched, x, w, dy):
    x_mapped, w_mapped, dy_mapped = in_batched
    take = lambda a, mapped, i: a[i] if mapped else a
    if not w_mapped:
      # One kernel (e.g. vmap over attack radii or corruption severities):
      # the input gradient folds the mapped axis into the batch; the
      # per-index kernel gradients (unused, then removed by XLA, when only
      # input gradients are wanted) stay separate.
      xs = x if x_mapped else jnp.broadcast_to(x, (axis_size,) + x.shape)
      dys = dy if dy_mapped else jnp.broadcast_to(dy,
                                                  (axis_size,) + dy.shape)
      dx = input_grad(xs.reshape((-1,) + xs.shape[2:]), w,
                      dys.reshape((-1,) + dys.shape[2:])).reshape(xs.shape)
      dw = jnp.stack([kernel_grad(xs[i], w, dys[i])
                      for i in range(axis_size)])
      return (dx, dw), (True, True)
    outs = [backward(take(x, x_mapped, i), w[i], take(dy, dy_mapped, i))
            for i in range(axis_size)]
    return (jnp.stack([o[0] for o in outs]),
            jnp.stack([o[1] for o in outs])), (True, True)

  @jax.custom_vjp
  def f(x, w):
    return forward(x, w)

  def fwd(x, w):
    # With symbolic_zeros, x and w come as CustomVJPPrimal(value, perturbed).
    if not w.perturbed:
      # Input gradients only (attacks): no barrier, no kernel gradient.
      return forward(x.value, w.value), (x.value, w.value)
    # Meant to materialise the input once (XLA fuses, i.e. re-computes, the
    # elementwise chain that produced it into each backward consumer); on
    # XLA:CPU that does not hold (module docstring).
    xv = lax.optimization_barrier(x.value)
    return forward(xv, w.value), (xv, w.value, None)  # 3 = kernel grad too.

  def bwd(res, dy):
    if len(res) == 2:
      return input_grad(*res, dy), None
    return backward(res[0], res[1], dy)

  f.defvjp(fwd, bwd, symbolic_zeros=True)
  return f


def lax_drop_in(fast: Callable[..., jax.Array], doc: str) -> Callable:
  """A function with `lax.conv_general_dilated`'s signature around `fast`.

  Args:
    fast: `fast(lhs, rhs, strides, pads, precision, plain) -> output`,
      called for the convolutions `supported` takes, with int strides and
      explicit (lo, hi) pads; `plain(lhs, rhs)` is lax's convolution with
      the same arguments, for the cases `fast` leaves to lax. Every other
      convolution goes to lax directly.
    doc: the docstring of the function made.

  Returns:
    `conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
    rhs_dilation, dimension_numbers, feature_group_count,
    batch_group_count, precision, preferred_element_type)`.
  """
  def conv_general_dilated(lhs, rhs, window_strides: Sequence[int],
                           padding: Padding,
                           lhs_dilation: Optional[Sequence[int]] = None,
                           rhs_dilation: Optional[Sequence[int]] = None,
                           dimension_numbers: Any = None,
                           feature_group_count: int = 1,
                           batch_group_count: int = 1,
                           precision: Any = None,
                           preferred_element_type: Any = None) -> jax.Array:
    plain = functools.partial(
        lax.conv_general_dilated, window_strides=window_strides,
        padding=padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
    if not supported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, batch_group_count,
                     preferred_element_type):
      return plain(lhs, rhs)
    strides = tuple(int(s) for s in window_strides)
    pads = explicit_pads(padding, lhs, rhs, strides)
    if isinstance(precision, list):
      precision = tuple(precision)
    return fast(lhs, rhs, strides, pads, precision, plain)

  conv_general_dilated.__doc__ = doc
  return conv_general_dilated


def _fast_kernel_grad(lhs, rhs, strides, pads, precision, plain):
  if rhs.shape[0] * rhs.shape[1] > MAX_TAPS:
    return plain(lhs, rhs)
  fast = _cpu_conv(strides, pads, precision, ynn_convolutions_enabled())
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=plain)


conv_general_dilated = lax_drop_in(_fast_kernel_grad, """\
`lax.conv_general_dilated` with a faster kernel gradient on CPU.

Same arguments as `lax.conv_general_dilated`; NHWC inputs and HWIO kernels
take the fast path. Returns the convolution, equal to lax's output; its
gradients equal lax's up to float summation order.
""")


class Conv(nn.Conv):
  """`flax.linen.Conv` whose kernel gradient is fast on XLA:CPU.

  Same attributes, parameters and outputs as `nn.Conv`; see the module
  docstring.
  """
  conv_general_dilated: Any = conv_general_dilated
