"""Post-training quantization (PTQ) of conv and dense layers on AQT.

A trained float model is turned into a *serving* model whose conv and dense
layers hold frozen integer weights plus float32 scales, and which is called
like every other model of the suite: `logits = apply_fn(variables, images)`.

  calib = quantization.calibrate(model_fn, float_variables, images)
  qvars = quantization.convert(float_variables, calib, weight_bits=8)
  qmodel = model_fn(conv=quantization.qconv(8), dense=quantization.qdense(8))
  logits = models.inference_fn(qmodel)(qvars, images)

Numerics (the choices, all AQT's symmetric integer numerics):

* **Weights**: per output channel, symmetric, abs-max scale; int8 in
  [-127, 127] and int4 in [-7, 7] (AQT `IntSymmetric`, zero preserved, so a
  pruned weight stays exactly 0). Stored in an int8 container (`quant`
  collection, `kernel`) with a float32 `kernel_scale` per output channel;
  `size.py` counts int4 at 4 bits (packed two per byte).
* **Activations** (the input of every conv/dense): int8, **static,
  per-tensor**, calibrated as the abs-max over a calibration set drawn from
  the training split (`act_scale`, one float32 per layer). Static scales make
  a prediction independent of the rest of the batch and match what an int8
  serving engine runs; values beyond the calibrated range are clipped, which
  is part of what a robustness study should see. `act_calibration="dynamic"`
  instead takes AQT's own per-example abs-max at run time (no calibration);
  `act_bits=None` keeps float activations (weight-only quantization).
* **Not quantized**: the input normalisation, BatchNorm (float32 affine after
  each conv — folding it into the per-channel weight scales is exactly
  equivalent for symmetric per-channel quantization) and biases (float32).

What comes from AQT (aqtp 0.9.0) and what is ours:

* The forward pass is AQT v2: `aqt_conv_general.make_conv_general_dilated_
  with_qt` for convs and `aqt_dot_general.DotGeneralRaw` for the dense head,
  fed with our frozen weight `QTensor`s (integer values + scales) and, for
  static activations, an incomplete `QTensor` carrying the calibrated scale
  (AQT clips and rounds the activation with it). AQT computes the conv on
  the integer values (held in float32: exact while |sum| < 2^24, i.e. any
  fan-in up to 1040 at int8) and rescales the output once; the dense head
  runs int8 x int8 -> int32 in `lax.dot_general`.
* AQT's weight quantizer (`aqt_quantizer.quantizer_make`) produces the
  integer weights and scales in `convert`.
* **Ours: the gradient.** AQT 0.9.0's conv path rounds outside any
  custom_vjp, so its gradient w.r.t. input and kernel is exactly zero —
  attacks on such a model would see gradient masking. Every quantized op
  here is a `jax.custom_vjp` whose forward is AQT's integer result exactly
  and whose backward is the vjp of the same op in float (input not
  quantized, dequantized weights `q * scale`): the straight-through estimator
  `f + stop_gradient(q - f)`, without computing `f` in the forward pass.
* **Ours: calibration and conversion** (`calibrate`, `convert`): AQT has no
  static-activation calibration flow for plain Flax Linen convs; the
  `calibrate` mode of `QConv`/`QDense` records the abs-max of each layer's
  input in a `calib` collection.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

from aqt.jax.v2 import aqt_conv_general
from aqt.jax.v2 import aqt_dot_general
from aqt.jax.v2 import aqt_quantizer
from aqt.jax.v2 import aqt_tensor
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax.train import steps

MODES = ("serve", "calibrate")
ACT_CALIBRATIONS = ("static", "dynamic")
QUANT = "quant"  # Variable collection of the frozen integer weights/scales.
CALIB = "calib"  # Variable collection of calibration statistics.


def quant_bound(bits: int) -> float:
  """AQT's abs-max bound for symmetric `bits` numerics (127.5 for int8)."""
  return 2.0 ** (bits - 1) - 0.5


class _Spec(NamedTuple):
  """Static settings of one quantized op (hashable, for custom_vjp)."""
  kind: str  # "conv" | "dense"
  strides: tuple
  padding: Any
  weight_bits: int
  act_bits: Optional[int]
  act_calibration: str


def _weight_qt(w_int, w_scale, like_ndim: int, dtype) -> aqt_tensor.QTensor:
  scale = w_scale.reshape((1,) * (like_ndim - 1) + (-1,))
  return aqt_tensor.QTensor(qvalue=w_int.astype(dtype), scale=[scale],
                            scale_t=None, bias=[], dequant_dtype=jnp.float32)


def _act_qt(a_scale, ndim: int) -> aqt_tensor.QTensor:
  return aqt_tensor.QTensor(qvalue=None, scale=[a_scale.reshape((1,) * ndim)],
                            scale_t=None, bias=[], dequant_dtype=jnp.float32)


def _float_op(x, w, spec: _Spec):
  if spec.kind == "conv":
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape,
                                        ("NHWC", "HWIO", "NHWC"))
    return jax.lax.conv_general_dilated(x, w, spec.strides, spec.padding,
                                        dimension_numbers=dn)
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _aqt_op(x, w_int, w_scale, a_scale, spec: _Spec):
  """AQT's quantized forward with frozen integer weights."""
  x, w_int, w_scale, a_scale = (jnp.asarray(v) for v in (x, w_int, w_scale,
                                                          a_scale))
  static = spec.act_bits is not None and spec.act_calibration == "static"
  if spec.kind == "conv":
    cfg = aqt_conv_general.conv_general_dilated_make(
        2, lhs_bits=spec.act_bits, rhs_bits=spec.weight_bits)
    conv = aqt_conv_general.make_conv_general_dilated_with_qt(cfg)
    dn = jax.lax.conv_dimension_numbers(x.shape, w_int.shape,
                                        ("NHWC", "HWIO", "NHWC"))
    lhs_qt = _act_qt(a_scale, x.ndim) if static else None
    rhs_qt = _weight_qt(w_int, w_scale, w_int.ndim, jnp.float32)
    w_float = w_int * w_scale  # Only for AQT's (discarded) calibration.
    out, _ = conv(x, w_float, spec.strides, spec.padding, lhs_qt, rhs_qt,
                  None, None, dn)
    return out
  cfg = aqt_dot_general.dot_general_raw_make(spec.act_bits, spec.weight_bits)
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  lhs_qt = _act_qt(a_scale, x.ndim) if static else None
  # int8 x int8 -> int32 when activations are quantized, else float x float.
  w_dtype = jnp.int8 if spec.act_bits is not None else jnp.float32
  rhs_qt = _weight_qt(w_int, w_scale, w_int.ndim, w_dtype)
  out, _ = cfg(x, w_int * w_scale, lhs_qt, rhs_qt, dims)
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def quantized_op(x, w_int, w_scale, a_scale, spec: _Spec):
  """AQT integer forward; straight-through (float) backward.

  Args:
    x: float input (NHWC for conv, [..., in] for dense).
    w_int: integer-valued weights (float32 holding the int values).
    w_scale: float32 [out] per-output-channel scales.
    a_scale: float32 [] activation scale (static calibration).
    spec: static settings.

  Returns:
    The quantized op's output; its vjp is that of the float op with
    dequantized weights `w_int * w_scale` (straight-through estimator).
  """
  return _aqt_op(x, w_int, w_scale, a_scale, spec)


def _quantized_op_fwd(x, w_int, w_scale, a_scale, spec):
  return _aqt_op(x, w_int, w_scale, a_scale, spec), (x, w_int, w_scale,
                                                      a_scale)


def _quantized_op_bwd(spec, res, g):
  x, w_int, w_scale, a_scale = res
  _, vjp = jax.vjp(lambda x_, w_: _float_op(x_, w_, spec), x,
                   w_int * w_scale)
  dx, dw = vjp(g)
  axes = tuple(range(w_int.ndim - 1))
  return (dx, dw * w_scale, jnp.sum(dw * w_int, axis=axes),
          jnp.zeros_like(a_scale))


quantized_op.defvjp(_quantized_op_fwd, _quantized_op_bwd)


def _check_settings(mode, weight_bits, act_bits, act_calibration):
  if mode not in MODES:
    raise ValueError(f"Unknown quantization mode {mode!r}; use one of "
                     f"{', '.join(MODES)}.")
  if act_calibration not in ACT_CALIBRATIONS:
    raise ValueError(f"Unknown act_calibration {act_calibration!r}; use one "
                     f"of {', '.join(ACT_CALIBRATIONS)}.")
  if not 2 <= weight_bits <= 8:
    raise ValueError(f"weight_bits must be in [2, 8], got {weight_bits}.")
  if act_bits is not None and not 2 <= act_bits <= 8:
    raise ValueError(f"act_bits must be None or in [2, 8], got {act_bits}.")


class _QuantLayer(nn.Module):
  """Shared logic of QConv / QDense."""

  def _run(self, x, kshape, spec: _Spec, use_bias: bool, features: int):
    _check_settings(self.mode, self.weight_bits, self.act_bits,
                    self.act_calibration)
    x = jnp.asarray(x, jnp.float32)
    if self.mode == "calibrate":
      kernel = self.param("kernel", self.kernel_init, kshape, jnp.float32)
      if self.is_mutable_collection(CALIB):
        amax = self.variable(CALIB, "act_max", jnp.zeros, (), jnp.float32)
        amax.value = jnp.maximum(amax.value, jnp.max(jnp.abs(x)))
      y = _float_op(x, kernel, spec)
    else:
      w_int = self.variable(QUANT, "kernel", jnp.zeros, kshape, jnp.int8)
      w_scale = self.variable(QUANT, "kernel_scale", jnp.ones, (features,),
                              jnp.float32)
      a_scale = self.variable(QUANT, "act_scale", jnp.ones, (), jnp.float32)
      y = quantized_op(x, w_int.value.astype(jnp.float32), w_scale.value,
                       a_scale.value, spec)
    if use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (features,),
                         jnp.float32)
    return jnp.asarray(y, self.dtype or jnp.float32)


class QConv(_QuantLayer):
  """Drop-in for `nn.Conv` (NHWC, no dilation/groups) with AQT PTQ.

  Attributes:
    features, kernel_size, strides, padding, use_bias, dtype, kernel_init:
      as in `nn.Conv` (padding: "SAME", "VALID" or ((lo, hi), ...)).
    weight_bits: integer weight bits (8 or 4 typically).
    act_bits: input activation bits, or None for float activations.
    act_calibration: "static" (calibrated per-tensor scale) or "dynamic".
    mode: "serve" (frozen integers in the `quant` collection) or
      "calibrate" (float `params/kernel`, records input abs-max in `calib`).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Union[int, Sequence[int]] = 1
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  weight_bits: int = 8
  act_bits: Optional[int] = 8
  act_calibration: str = "static"
  mode: str = "serve"

  @nn.compact
  def __call__(self, x):
    ks = tuple(self.kernel_size)
    strides = ((self.strides,) * len(ks) if isinstance(self.strides, int)
               else tuple(self.strides))
    padding = self.padding
    if not isinstance(padding, str):
      padding = tuple(tuple(p) for p in padding)
    spec = _Spec("conv", strides, padding, self.weight_bits, self.act_bits,
                 self.act_calibration)
    return self._run(x, ks + (x.shape[-1], self.features), spec,
                     self.use_bias, self.features)


class QDense(_QuantLayer):
  """Drop-in for `nn.Dense` with AQT PTQ (attributes as in `QConv`)."""
  features: int
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  weight_bits: int = 8
  act_bits: Optional[int] = 8
  act_calibration: str = "static"
  mode: str = "serve"

  @nn.compact
  def __call__(self, x):
    spec = _Spec("dense", (), None, self.weight_bits, self.act_bits,
                 self.act_calibration)
    return self._run(x, (x.shape[-1], self.features), spec, self.use_bias,
                     self.features)


@functools.cache  # Same settings -> same object -> equal model modules.
def qconv(weight_bits: int = 8, act_bits: Optional[int] = 8,
          act_calibration: str = "static", mode: str = "serve"):
  """`QConv` with these settings, for `models.get_model(..., conv=...)`."""
  _check_settings(mode, weight_bits, act_bits, act_calibration)
  return functools.partial(QConv, weight_bits=weight_bits, act_bits=act_bits,
                           act_calibration=act_calibration, mode=mode)


@functools.cache  # Same settings -> same object -> equal model modules.
def qdense(weight_bits: int = 8, act_bits: Optional[int] = 8,
           act_calibration: str = "static", mode: str = "serve"):
  """`QDense` with these settings, for `models.get_model(..., dense=...)`."""
  _check_settings(mode, weight_bits, act_bits, act_calibration)
  return functools.partial(QDense, weight_bits=weight_bits, act_bits=act_bits,
                           act_calibration=act_calibration, mode=mode)


@steps.same_object_for_same_args
def _calibration_step(model: nn.Module):
  """One jitted calibration pass per calibrating model (variables passed in).

  Shared by every model of one architecture (seeds, sparsities), so a study
  compiles it once; eager op-by-op calibration compiled each op per shape.
  """

  @jax.jit
  def step(variables, calib, images):
    _, new = model.apply({**variables, CALIB: calib}, images, train=False,
                         mutable=[CALIB])
    return new[CALIB]

  return step


@functools.partial(jax.jit, static_argnums=1)
def _quantize_kernels(kernels: Dict[Any, Any], bits: int):
  """`quantize_weights` of every kernel, as one program per architecture."""
  return {path: quantize_weights(k, bits) for path, k in kernels.items()}


def calibrate(model_fn: Callable[..., nn.Module], variables,
              batches) -> Dict[str, Any]:
  """Abs-max of every conv/dense input over calibration batches.

  Args:
    model_fn: `(conv=..., dense=...) -> module` building the float
      architecture with injected ops (e.g. a partial of `models.get_model`).
    variables: the trained float model's variables.
    batches: iterable of float image batches in [0, 1] (NHWC).

  Returns:
    The `calib` collection: {layer path...: {"act_max": float32 []}}.
  """
  model = model_fn(conv=qconv(mode="calibrate"),
                   dense=qdense(mode="calibrate"))
  step = _calibration_step(model)
  calib = None
  for images in batches:
    images = jnp.asarray(images, jnp.float32)
    if calib is None:  # Create the collection with zeros, then accumulate.
      shapes = jax.eval_shape(
          lambda v, x: model.apply(v, x, train=False, mutable=[CALIB])[1],
          variables, images[:1])[CALIB]
      calib = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    calib = step(variables, calib, images)
  if calib is None:
    raise ValueError("calibrate: no calibration batches were given.")
  return flax.core.unfreeze(calib)


def quantize_weights(kernel, bits: int):
  """Per-output-channel symmetric AQT quantization of a conv/dense kernel.

  Args:
    kernel: float [..., out] kernel.
    bits: weight bits.

  Returns:
    (int8 array of integer values in [-(2^(bits-1) - 1), 2^(bits-1) - 1],
    float32 [out] scales); `values * scales` dequantizes.
  """
  q = aqt_quantizer.quantizer_make(bits)
  q.calib_shared_axes = list(range(kernel.ndim - 1))
  qt, _ = q.quant(jnp.asarray(kernel, jnp.float32), calibration_axes=None)
  values = jnp.asarray(qt.qvalue).astype(jnp.int8)
  return values, jnp.asarray(qt.scale[0], jnp.float32).reshape(-1)


def convert(variables, calib: Optional[Dict[str, Any]] = None, *,
            weight_bits: int = 8, act_bits: Optional[int] = 8,
            act_calibration: str = "static"):
  """Float variables -> serving variables of the `qconv`/`qdense` model.

  Every `kernel` param (conv and dense layers) moves to the `quant`
  collection as integer values + per-channel scales, with the layer's
  activation scale (`act_max / quant_bound(act_bits)`, static only; 1.0
  otherwise, unused); every other param and collection is kept.

  Args:
    variables: trained float variables ({"params", "batch_stats"}).
    calib: output of `calibrate` (needed for static activations).
    weight_bits, act_bits, act_calibration: as in `qconv`.

  Returns:
    {"params": params without kernels, "batch_stats": ..., "quant": ...}.
  """
  _check_settings("serve", weight_bits, act_bits, act_calibration)
  static = act_bits is not None and act_calibration == "static"
  if static and calib is None:
    raise ValueError("Static activation quantization needs calibration "
                     "statistics: pass calib=quantization.calibrate(...).")
  params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables["params"]))
  flat_calib = (flax.traverse_util.flatten_dict(calib) if calib is not None
                else {})
  new_params, quant = {}, {}
  kernels = {path: value for path, value in params.items()
             if path[-1] == "kernel"}
  quantized = _quantize_kernels(kernels, weight_bits) if kernels else {}
  for path, value in params.items():
    if path[-1] != "kernel":
      new_params[path] = value
      continue
    layer = path[:-1]
    w_int, w_scale = quantized[path]
    a_scale = jnp.ones((), jnp.float32)
    if static:
      if layer + ("act_max",) not in flat_calib:
        raise KeyError(f"No calibration statistics for layer "
                       f"{'/'.join(layer)}; was calibrate() run on the same "
                       "architecture?")
      amax = jnp.asarray(flat_calib[layer + ("act_max",)], jnp.float32)
      a_scale = jnp.maximum(amax, 1e-8) / quant_bound(act_bits)
    quant[layer + ("kernel",)] = w_int
    quant[layer + ("kernel_scale",)] = w_scale
    quant[layer + ("act_scale",)] = a_scale
  out = {k: v for k, v in variables.items() if k not in ("params", CALIB)}
  out["params"] = flax.traverse_util.unflatten_dict(new_params)
  out[QUANT] = flax.traverse_util.unflatten_dict(quant)
  return out


def dequantize(qvariables):
  """Serving variables -> float variables (kernel = values * scales)."""
  quant = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(qvariables[QUANT]))
  params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(qvariables["params"]))
  for path, value in quant.items():
    if path[-1] == "kernel":
      scale = quant[path[:-1] + ("kernel_scale",)]
      params[path] = jnp.asarray(value, jnp.float32) * scale
  out = {k: v for k, v in qvariables.items() if k != QUANT}
  out["params"] = flax.traverse_util.unflatten_dict(params)
  return out


def distinct_values_per_channel(w_int) -> np.ndarray:
  """Number of distinct integer values in each output channel (last axis)."""
  w = np.asarray(w_int).reshape(-1, np.shape(w_int)[-1])
  return np.array([np.unique(w[:, c]).size for c in range(w.shape[1])])
