"""The CPU-fast convolution equals `lax.conv_general_dilated` (values, grads).

The optimized path (robustjax.models.conv) must not change results beyond
float summation order: logits and gradients within 1e-5 relative (max abs
difference over max abs value) of the plain path, on small inputs.
"""

import functools
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustjax import models
from robustjax.models import conv as conv_lib

RTOL = 1e-5
NHWC = ("NHWC", "HWIO", "NHWC")
YNN_CONV_OFF = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _assert_close(test, tree_a, tree_b):
  leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
  test.assertEqual(len(leaves_a), len(leaves_b))
  for a, b in zip(leaves_a, leaves_b):
    test.assertEqual(np.shape(a), np.shape(b))
    test.assertLessEqual(_rel_err(a, b), RTOL)


def _conv_loss(conv_fn, x, w, strides, padding):
  y = conv_fn(x, w, strides, padding, dimension_numbers=NHWC)
  return jnp.sum(jnp.sin(y) * y)  # A non-trivial output gradient.


class ConvFunctionTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("3x3_s1", (3, 3), (1, 1), ((1, 1), (1, 1))),
      ("3x3_s2", (3, 3), (2, 2), ((1, 1), (1, 1))),
      ("1x1_s2_valid", (1, 1), (2, 2), "VALID"),
      ("3x3_same", (3, 3), (1, 1), "SAME"),
      ("3x3_s2_same_odd", (3, 3), (2, 2), "SAME"),
      ("2x3_asym", (2, 3), (1, 2), ((0, 1), (2, 0))),
  )
  def test_values_and_gradients_match_lax(self, kernel, strides, padding):
    # Both CPU kernel-gradient paths: per-tap GEMMs (YNNPACK convolutions on,
    # XLA's default) and XLA's own (off, as configure_host_devices sets).
    for xla_flags in ("", YNN_CONV_OFF):
      with mock.patch.dict(os.environ, {"XLA_FLAGS": xla_flags}):
        self._check_against_lax(kernel, strides, padding)

  def _check_against_lax(self, kernel, strides, padding):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (3, 9, 8, 5))
    w = jax.random.normal(kw, kernel + (5, 4)) * 0.3
    ours = conv_lib.conv_general_dilated(x, w, strides, padding,
                                         dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, w, strides, padding,
                                   dimension_numbers=NHWC)
    _assert_close(self, ours, ref)
    grads = lambda fn: jax.jit(jax.grad(functools.partial(  # pylint: disable=g-long-lambda
        _conv_loss, fn, strides=strides, padding=padding), argnums=(0, 1)))(
            x, w)
    _assert_close(self, grads(conv_lib.conv_general_dilated),
                  grads(lax.conv_general_dilated))

  def test_ynn_flag_parsing(self):
    enabled = conv_lib.ynn_convolutions_enabled
    self.assertTrue(enabled(""))
    self.assertTrue(enabled("--xla_force_host_platform_device_count=2"))
    self.assertFalse(enabled(YNN_CONV_OFF))
    self.assertFalse(enabled(
        "--xla_cpu_experimental_ynn_fusion_type=-eltwise,"
        "-individual_convolution"))
    self.assertFalse(enabled("--xla_cpu_experimental_ynn_fusion_type="))
    self.assertTrue(enabled(
        "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"))
    self.assertTrue(enabled("--xla_cpu_experimental_ynn_fusion_type=-eltwise"))

  def test_cpu_kernel_gradient_uses_matrix_products(self):
    if jax.default_backend() != "cpu":
      self.skipTest("The per-tap GEMM path is CPU-only; on "
                    f"{jax.default_backend()} lax's own convolution is used.")
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    loss = lambda fn: lambda w: jnp.sum(fn(  # pylint: disable=g-long-lambda
        x, w, (1, 1), "SAME", dimension_numbers=NHWC))
    with mock.patch.dict(os.environ, {"XLA_FLAGS": ""}):
      ours = jax.jit(jax.grad(loss(conv_lib.conv_general_dilated))).lower(
          w).compile().as_text()
    plain = jax.jit(jax.grad(loss(lax.conv_general_dilated))).lower(
        w).compile().as_text()
    self.assertIn(" dot(", ours)
    self.assertNotIn(" dot(", plain)

  def test_unsupported_configurations_fall_back_to_lax(self):
    x = jax.random.normal(jax.random.key(1), (2, 3, 7, 7))  # NCHW.
    w = jax.random.normal(jax.random.key(2), (4, 3, 3, 3))  # OIHW.
    for kwargs in (dict(), dict(rhs_dilation=(2, 2))):
      ours = conv_lib.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
      ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
      np.testing.assert_array_equal(ours, ref)

  def test_vmap_over_kernels_matches_per_model_results(self):
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 6, 6, 3))
    ws = jax.random.normal(kw, (3, 3, 3, 3, 4))  # 3 models.
    grad = jax.grad(functools.partial(_conv_loss, conv_lib.conv_general_dilated,
                                      strides=(1, 1), padding="SAME"),
                    argnums=(0, 1))
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(x, ws)
    for i in range(3):
      _assert_close(self, jax.tree.map(lambda t, i=i: t[i], batched),
                    grad(x, ws[i]))
    # One kernel, per-index inputs (vmap over attack radii or severities).
    xs = jnp.stack([x, 2 * x, -x])
    batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))(xs, ws[0])
    for i in range(3):
      _assert_close(self, jax.tree.map(lambda t, i=i: t[i], batched),
                    grad(xs[i], ws[0]))
    # Per-model inputs too (each model sees its own batch).
    xs = jnp.stack([x, 2 * x, -x])
    batched = jax.jit(jax.vmap(grad))(xs, ws)
    for i in range(3):
      _assert_close(self, jax.tree.map(lambda t, i=i: t[i], batched),
                    grad(xs[i], ws[i]))


class ResNetWithFastConvTest(absltest.TestCase):

  def test_model_takes_fast_conv(self):
    self.assertIs(models.get_model("resnet8", 10, conv=conv_lib.Conv).conv,
                  conv_lib.Conv)

  def test_logits_and_gradients_match_flax_conv(self):
    kwargs = dict(num_classes=5, width=4, mean=(0.5,), std=(0.25,))
    fast = models.get_model("resnet8", conv=conv_lib.Conv, **kwargs)
    plain = models.get_model("resnet8", conv=nn.Conv, **kwargs)
    x = jax.random.uniform(jax.random.key(4), (4, 12, 12, 1))
    labels = jnp.arange(4) % 5
    variables = plain.init(jax.random.key(5), x)
    # Same parameter tree from either module.
    self.assertEqual(
        jax.tree.structure(variables),
        jax.tree.structure(fast.init(jax.random.key(5), x)))

    def loss(model, params):
      logits, _ = model.apply(
          {"params": params, "batch_stats": variables["batch_stats"]}, x,
          train=True, mutable=["batch_stats"])
      onehot = jax.nn.one_hot(labels, 5)
      return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, -1))

    for train in (False, True):
      _assert_close(
          self, jax.jit(functools.partial(fast.apply, train=train,
                                          mutable=["batch_stats"]))(
                                              variables, x),
          jax.jit(functools.partial(plain.apply, train=train,
                                    mutable=["batch_stats"]))(variables, x))
    _assert_close(self,
                  jax.jit(jax.grad(functools.partial(loss, fast)))(
                      variables["params"]),
                  jax.jit(jax.grad(functools.partial(loss, plain)))(
                      variables["params"]))
    # Input gradients (what attacks use).
    input_grad = lambda m: jax.jit(jax.grad(  # pylint: disable=g-long-lambda
        lambda x: jnp.sum(m.apply(variables, x) * jnp.arange(5.0))))(x)
    _assert_close(self, input_grad(fast), input_grad(plain))

  def test_conv_module_is_flax_conv(self):
    self.assertTrue(issubclass(conv_lib.Conv, nn.Conv))


if __name__ == "__main__":
  absltest.main()
