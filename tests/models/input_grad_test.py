"""The fast-input-gradient convolution equals lax's (values and gradients).

`robustjax.models.input_grad` reformulates the input gradient of strided and
few-channel convolutions on CPU; it must not change results beyond float
summation order: logits equal, gradients within 1e-5 relative (max abs
difference over max abs value) of lax's, on small inputs.
"""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustjax import models
from robustjax.models import input_grad
from robustjax.robustness import attack_steps

RTOL = 1e-5
NHWC = ("NHWC", "HWIO", "NHWC")


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _loss(conv_fn, x, w, strides, padding):
  y = conv_fn(x, w, strides, padding, dimension_numbers=NHWC)
  return jnp.sum(jnp.sin(y) * y)  # A non-trivial output gradient.


def _data(shape, kernel, channels, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape + (channels,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel + (channels, 5)), jnp.float32)
  return x, w


class InputGradFunctionTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Strided: phase decomposition.
      ("3x3_s2", (9, 8), (3, 3), 3, (2, 2), ((1, 1), (1, 1))),
      ("1x1_s2_valid", (8, 8), (1, 1), 4, (2, 2), "VALID"),
      ("3x3_s2_same_odd", (9, 9), (3, 3), 6, (2, 2), "SAME"),
      ("7x7_s2_stem", (16, 15), (7, 7), 3, (2, 2), ((3, 3), (3, 3))),
      ("4x2_s3_asym", (11, 10), (4, 2), 5, (3, 2), ((0, 2), (2, 0))),
      ("3x3_s2_pad_past_kernel", (8, 8), (3, 3), 2, (2, 2), ((3, 2), (0, 1))),
      ("2x2_s2_valid", (8, 9), (2, 2), 6, (2, 2), "VALID"),
      # Stride 1, few channels: GEMM + col2im.
      ("3x3_grey", (8, 7), (3, 3), 1, (1, 1), ((1, 1), (1, 1))),
      ("3x3_rgb_same", (8, 8), (3, 3), 3, (1, 1), "SAME"),
      ("5x5_rgb_valid", (9, 8), (5, 5), 3, (1, 1), "VALID"),
      ("2x3_rgb_asym", (7, 8), (2, 3), 3, (1, 1), ((0, 1), (2, 0))),
  )
  def test_values_and_gradients_match_lax(self, hw, kernel, channels,
                                          strides, padding):
    x, w = _data((2,) + hw, kernel, channels)
    ref = jax.jit(jax.value_and_grad(
        lambda x, w: _loss(lax.conv_general_dilated, x, w, strides, padding),
        (0, 1)))(x, w)
    out = jax.jit(jax.value_and_grad(
        lambda x, w: _loss(input_grad.conv_general_dilated, x, w, strides,
                           padding), (0, 1)))(x, w)
    self.assertEqual(float(ref[0]), float(out[0]))  # Same forward call.
    for got, want in zip(out[1], ref[1]):
      self.assertEqual(got.shape, want.shape)
      self.assertLessEqual(_rel_err(got, want), RTOL)

  def test_input_gradient_alone_and_kernel_gradient_alone(self):
    x, w = _data((2, 9, 9), (3, 3), 3)
    for argnum in (0, 1):
      ref = jax.grad(lambda x, w: _loss(lax.conv_general_dilated, x, w,
                                        (2, 2), "SAME"), argnum)(x, w)
      out = jax.grad(lambda x, w: _loss(input_grad.conv_general_dilated, x,
                                        w, (2, 2), "SAME"), argnum)(x, w)
      self.assertLessEqual(_rel_err(out, ref), RTOL)

  def test_cpu_input_gradient_has_no_dilated_convolution(self):
    # lax's input gradient of a strided convolution is an lhs-dilated
    # convolution; the phase form has none, and taking input gradients only
    # traces no kernel gradient.
    x, w = _data((2, 8, 8), (3, 3), 4)

    def hlo(conv_fn):
      grad = jax.jit(jax.grad(lambda x: _loss(conv_fn, x, w, (2, 2),
                                              ((1, 1), (1, 1)))))
      return grad.lower(x).compile().as_text()

    self.assertIn("lhs_dilate", hlo(lax.conv_general_dilated))
    fast = hlo(input_grad.conv_general_dilated)
    self.assertNotIn("lhs_dilate", fast)
    # The forward pass and one convolution per phase (XLA makes the 1-tap
    # phase a dot); no kernel-gradient convolution.
    self.assertEqual(fast.count(" convolution(") + fast.count(" dot("), 5)

  def test_vmap_over_inputs_matches(self):
    # As the attack evaluator vmaps over its eps grid (one kernel).
    x, w = _data((2, 9, 8), (3, 3), 3)
    scales = jnp.asarray([1.0, 0.5, -2.0])

    def grads(conv_fn):
      one = lambda s: jax.grad(lambda x: _loss(conv_fn, x * s, w, (2, 2),
                                               "SAME"))(x)
      return jax.jit(jax.vmap(one))(scales)

    self.assertLessEqual(
        _rel_err(grads(input_grad.conv_general_dilated),
                 grads(lax.conv_general_dilated)), RTOL)

  @parameterized.named_parameters(
      ("dilated_kernel", dict(rhs_dilation=(2, 2))),
      ("groups", dict(feature_group_count=2)),
      ("stride1_many_channels", dict()),
  )
  def test_other_configurations_are_lax_itself(self, kwargs):
    x, w = _data((2, 8, 8), (3, 3), 8)
    if "feature_group_count" in kwargs:
      w = w[:, :, :4, :4]
    strides = (1, 1)
    jaxpr = str(jax.make_jaxpr(lambda x, w: input_grad.conv_general_dilated(
        x, w, strides, "SAME", dimension_numbers=NHWC, **kwargs))(x, w))
    self.assertNotIn("custom_vjp", jaxpr)
    self.assertIn("conv_general_dilated", jaxpr)


  def test_other_backends_get_lax_itself(self):
    x, w = _data((2, 8, 8), (3, 3), 3)
    trace = lambda: str(jax.make_jaxpr(  # pylint: disable=g-long-lambda
        lambda x, w: input_grad.conv_general_dilated(
            x, w, (2, 2), "SAME", dimension_numbers=NHWC))(x, w))
    self.assertIn("custom_vjp", trace())  # CPU: the fast input gradient.
    with mock.patch.object(jax, "default_backend", return_value="gpu"):
      self.assertNotIn("custom_vjp", trace())


class ModelTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Grey 3x3 stem (col2im) + strided blocks.
      ("resnet8_grey", "resnet8", 16, 1),
      # 7x7/2 RGB stem, max-pool, strided 1x1 shortcuts.
      ("resnet18_rgb", "resnet18", 32, 3),
  )
  def test_inference_fn_matches_flax_conv(self, name, size, channels):
    model = models.get_model(name, num_classes=10, width=4,
                             mean=(0.5,) * channels, std=(0.25,) * channels)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(3, size, size, channels)), jnp.float32)
    labels = jnp.asarray([0, 3, 7], jnp.int32)
    variables = model.init(jax.random.key(0), x)
    plain = lambda v, x: model.apply(v, x, train=False)
    fast = models.inference_fn(model)
    self.assertTrue(np.array_equal(jax.jit(fast)(variables, x),
                                   jax.jit(plain)(variables, x)))
    # The input gradient, as attacks take it (kernel gradients: the
    # function-level tests above).
    grad = lambda fn: jax.jit(jax.grad(  # pylint: disable=g-long-lambda
        lambda v, x: jnp.sum(attack_steps.per_example_loss(
            fn(v, x), labels)), 1))(variables, x)
    self.assertLessEqual(_rel_err(grad(fast), grad(plain)), RTOL)

  def test_for_input_gradients_swaps_only_flax_conv(self):
    model = models.get_model("resnet8", num_classes=10)
    fast = input_grad.for_input_gradients(model)
    self.assertIs(fast.conv, input_grad.Conv)
    # Equal models get equal clones (shared compiled programs).
    self.assertEqual(fast, input_grad.for_input_gradients(model.clone()))
    self.assertIs(models.inference_fn(model),
                  models.inference_fn(model.clone()))
    injected = model.clone(conv=nn.ConvTranspose)
    self.assertIs(input_grad.for_input_gradients(injected), injected)
    # Same parameter tree.
    x = jnp.zeros((1, 16, 16, 3))
    shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(
        m.init, jax.random.key(0), x))
    self.assertEqual(shapes(fast), shapes(model))


if __name__ == "__main__":
  absltest.main()
