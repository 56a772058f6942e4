"""Convolution input gradients that run fast on XLA:CPU (for attacks).

Gradient attacks (FGSM, PGD) differentiate the loss with respect to the
*input* only, at fixed weights. On XLA:CPU (the launchers' process) two
kinds of convolution have a slow input gradient:

* Strided convolutions. XLA computes the input gradient as a stride-1
  convolution over the output gradient dilated with zeros
  (`lhs_dilation`): 3/4 of its multiply-adds read inserted zeros, and XLA
  runs it on about one thread, several times slower than the layer's
  forward pass.
* Convolutions with few input channels (an RGB or grey stem): the input
  gradient is a convolution with 1-3 output channels, which XLA:CPU runs
  poorly.

`conv_general_dilated` below has the signature of `lax.conv_general_dilated`,
computes exactly its forward pass (the same call), and defines the input
gradient by two exact reformulations (the same products, summed in another
order, so the result moves by float rounding only):

* Stride s > 1, by phase: the input positions with the same remainder
  modulo s receive gradients from one fixed subset of kernel taps. Each of
  the s x s phases is one stride-1 convolution of the (undilated) output
  gradient with that sub-kernel, flipped; the phases are then interleaved.
* Stride 1 with at most `FEW_CHANNELS` input channels: one matrix product
  of the output gradient with the kernel, giving every tap's contribution
  (`[N, H, W, taps * C]`), then the taps' shifted copies summed (col2im).

On other platforms (GPU, TPU) the function is `lax.conv_general_dilated`
itself: the choice is made when it is traced, by JAX's default backend
(`lax.platform_dependent`, which decides when the program is lowered, would
make every attack program trace both forms; a program placed on another
backend's devices than the default one gets the default backend's form,
which changes only its speed). The kernel gradient is lax's
own, and it is not even traced when only input gradients are taken
(`symbolic_zeros`). Other configurations (dilation, groups,
layouts other than NHWC / HWIO) fall back to `lax.conv_general_dilated`.

`for_input_gradients(model)` gives a model this function as its `conv` (same
parameters, same outputs); `robustjax.models.inference_fn` applies it, so
every evaluator and attack of the suite uses it. Training keeps flax's
`nn.Conv`: there the input gradients of strided layers are a small part of
the step (no measurable gain) and the trained numbers stay as they were.

What it buys: the changed layers' input gradients run faster and take
less CPU time, the grey stem most; a whole PGD step gains less, since these
layers are a small part of its CPU time (the attack benchmark measures
it).
"""

import functools
from typing import Tuple

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from robustjax.models import conv as conv_lib

# Input channels up to which a stride-1 convolution's input gradient is
# computed as one matrix product + col2im (grey: 1, RGB: 3).
FEW_CHANNELS = 4

_NHWC = ("NHWC", "HWIO", "NHWC")


def _phases(size_in: int, size_out: int, k: int, s: int, pad_lo: int):
  """Per phase a (input positions s*i + a): (first tap, taps, pads, length).

  Input position n = s*i + a receives dy[o] * w[t] for s*o + t - pad_lo = n,
  i.e. the taps t = s*m + r (r = (a + pad_lo) mod s) at o = i + c - m
  (c = (a + pad_lo) // s): a stride-1 correlation of dy with the sub-kernel
  w[r::s] reversed, padded by (taps - 1 - c) below.
  """
  length = -(-size_in // s)
  out = []
  for a in range(s):
    r, c = (a + pad_lo) % s, (a + pad_lo) // s
    taps = max(0, -(-(k - r) // s))
    out.append((r, taps, (taps - 1 - c, length - 1 + c - (size_out - 1)),
                length))
  return out


def strided_input_grad(dy, w, in_hw: Tuple[int, int],
                       strides: Tuple[int, int],
                       pads: Tuple[Tuple[int, int], Tuple[int, int]],
                       precision=None):
  """d(loss)/d(input) of a strided NHWC/HWIO convolution, by phase.

  One stride-1 convolution per phase (s_h x s_w of them) with that phase's
  taps only, then the phases interleaved. (One convolution for all phases,
  with the taps that miss a phase as zeros, compiles faster but takes more
  CPU time: a 1x1 stride-2 kernel reaches one phase of four.)

  Args:
    dy: output gradient, [N, Ho, Wo, O].
    w: kernel, [kh, kw, C, O].
    in_hw: the input's (height, width).
    strides, pads: the forward convolution's strides and explicit padding.
    precision: as for `lax.conv_general_dilated`.

  Returns:
    [N, H, W, C], equal to lax's input gradient up to float summation order.
  """
  kh, kw, c, _ = w.shape
  rows_plan = _phases(in_hw[0], dy.shape[1], kh, strides[0], pads[0][0])
  cols_plan = _phases(in_hw[1], dy.shape[2], kw, strides[1], pads[1][0])
  wt = jnp.swapaxes(w, 2, 3)  # [kh, kw, O, C]: the transposed convolution.
  n = dy.shape[0]
  rows = []
  for r_h, taps_h, pad_h, len_h in rows_plan:
    cols = []
    for r_w, taps_w, pad_w, len_w in cols_plan:
      if not taps_h or not taps_w:  # No tap reaches this phase.
        cols.append(jnp.zeros((n, len_h, len_w, c), dy.dtype))
        continue
      sub = wt[r_h::strides[0], r_w::strides[1]][:taps_h, :taps_w]
      cols.append(lax.conv_general_dilated(
          dy, sub[::-1, ::-1], (1, 1), (pad_h, pad_w),
          dimension_numbers=_NHWC, precision=precision))
    rows.append(jnp.stack(cols, 3))  # [N, len_h, len_w, s_w, C]
  out = jnp.stack(rows, 2)  # [N, len_h, s_h, len_w, s_w, C]
  len_h, len_w = rows_plan[0][3], cols_plan[0][3]
  out = out.reshape(n, len_h * strides[0], len_w * strides[1], c)
  return out[:, :in_hw[0], :in_hw[1]]


def col2im_input_grad(dy, w, in_hw: Tuple[int, int],
                      pads: Tuple[Tuple[int, int], Tuple[int, int]],
                      precision=None):
  """d(loss)/d(input) of a stride-1 NHWC/HWIO convolution, as GEMM + col2im.

  For few input channels: one product dy @ W^T gives each tap's
  contribution, and the taps' copies are summed at their offsets.
  """
  kh, kw, c, o = w.shape
  n, ho, wo, _ = dy.shape
  cols = jnp.einsum("nhwo,ko->nhwk", dy, w.reshape(kh * kw * c, o),
                    precision=precision).reshape(n, ho, wo, kh, kw, c)
  zero = jnp.zeros((), dy.dtype)
  total = None
  for i in range(kh):
    for j in range(kw):
      lo_h, lo_w = i - pads[0][0], j - pads[1][0]
      # lax.pad takes negative padding (crops) where a tap reaches past the
      # input (padding).
      part = lax.pad(cols[:, :, :, i, j], zero, (
          (0, 0, 0), (lo_h, in_hw[0] - lo_h - ho, 0),
          (lo_w, in_hw[1] - lo_w - wo, 0), (0, 0, 0)))
      total = part if total is None else total + part
  return total


def _fast_input_grad(dy, w, in_hw, strides, pads, precision):
  if max(strides) > 1:
    return strided_input_grad(dy, w, in_hw, strides, pads, precision)
  return col2im_input_grad(dy, w, in_hw, pads, precision)


@functools.lru_cache(maxsize=None)
def _conv_fn(in_hw, strides, pads, precision):
  """The custom_vjp convolution for one static configuration (CPU)."""

  def conv(x, w):
    return lax.conv_general_dilated(x, w, strides, pads,
                                    dimension_numbers=_NHWC,
                                    precision=precision)

  @jax.custom_vjp
  def f(x, w):
    return conv(x, w)

  def fwd(x, w):
    # With symbolic_zeros, x and w come as CustomVJPPrimal(value, perturbed);
    # which gradients are wanted is encoded in the residuals' structure.
    wanted = (("dx",) if x.perturbed else ()) + (
        ("dw",) if w.perturbed else ())
    return conv(x.value, w.value), (x.value, w.value, dict.fromkeys(wanted))

  def bwd(res, dy):
    x, w, wanted = res
    dx = (_fast_input_grad(dy, w, in_hw, strides, pads, precision)
          if "dx" in wanted else None)
    dw = (jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]
          if "dw" in wanted else None)
    return dx, dw

  f.defvjp(fwd, bwd, symbolic_zeros=True)
  return f


def _fast_input_grad_path(lhs, rhs, strides, pads, precision, plain):
  if (jax.default_backend() != "cpu"
      or (max(strides) == 1 and rhs.shape[2] > FEW_CHANNELS)):
    return plain(lhs, rhs)  # lax's input gradient is fine.
  in_hw = tuple(int(d) for d in lhs.shape[1:3])
  return _conv_fn(in_hw, strides, pads, precision)(lhs, rhs)


conv_general_dilated = conv_lib.lax_drop_in(_fast_input_grad_path, """\
`lax.conv_general_dilated` with a faster input gradient on CPU.

Same arguments and forward result as `lax.conv_general_dilated`; see the
module docstring for the input gradient.
""")


# One object, so that models cloned with it compare (and hash) equal and
# share their compiled programs; a partial keeps the class `nn.Conv`, so
# automatic parameter names are unchanged too.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def for_input_gradients(model):
  """`model` with this module's convolution (same params, same logits).

  Only a model whose `conv` is flax's default `nn.Conv` is changed (an
  injected op, e.g. a quantized convolution, is left alone).
  """
  if getattr(model, "conv", None) is not nn.Conv:
    return model
  return model.clone(conv=Conv)
