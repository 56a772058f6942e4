"""Tests for robustjax.compress.quantization (AQT PTQ) on a trained model.

A ResNet-8 (width 8) is trained for 2 epochs on the embedded digits data once
per test class (~97% MNIST test), then quantized. Run:

  python -m pytest tests/compress/quantization_test.py
"""

import functools
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import digits_resnet
from robustjax import models
from robustjax.compress import recipes
from robustjax.compress import quantization
from robustjax.data import loader
from robustjax.models import factory
from robustjax.robustness import evaluators
from robustjax.train import trainer


class QuantizationTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = digits_resnet.get_config("model=resnet8,width=8,epochs=2")
    with tempfile.TemporaryDirectory() as workdir:
      state = trainer.train_and_evaluate(cls.config, workdir)
    cls.float_vars = jax.device_get(state.variables)
    cls.train_split, cls.evals = loader.load_data(cls.config)
    cls.spec = factory.arch_spec(cls.config)
    cls.model_fn = functools.partial(factory.build_from_spec, cls.spec)
    cls.float_fn = models.inference_fn(cls.model_fn())
    cls.float_acc = evaluators.accuracy(cls.float_fn, cls.float_vars,
                                        cls.evals["test"], 500)
    cls.calib = quantization.calibrate(
        cls.model_fn, cls.float_vars,
        recipes.calibration_images(cls.train_split, 500))
    cls.images = jnp.asarray(cls.evals["test"].images[:64], jnp.float32) / 255
    cls.labels = jnp.asarray(cls.evals["test"].labels[:64])
    cls._cache = {}

  def _quantized(self, weight_bits, act_bits=8, act_calibration="static"):
    key = (weight_bits, act_bits, act_calibration)
    if key not in self._cache:
      self._cache[key] = self._convert(*key)
    return self._cache[key]

  def _convert(self, weight_bits, act_bits, act_calibration):
    qvars = quantization.convert(self.float_vars, self.calib,
                                 weight_bits=weight_bits, act_bits=act_bits,
                                 act_calibration=act_calibration)
    model = self.model_fn(
        conv=quantization.qconv(weight_bits, act_bits, act_calibration),
        dense=quantization.qdense(weight_bits, act_bits, act_calibration))
    return models.inference_fn(model), qvars

  def test_float_model_is_trained(self):
    self.assertGreater(self.float_acc, 0.93)

  @parameterized.parameters((8, 127), (4, 7))
  def test_integer_weights_per_channel(self, bits, bound):
    _, qvars = self._quantized(bits)
    flat = jax.tree_util.tree_flatten_with_path(qvars["quant"])[0]
    kernels = [(p, x) for p, x in flat if p[-1].key == "kernel"]
    self.assertLen(kernels, 10)  # 9 convs (incl. 2 projections) + head.
    for path, w in kernels:
      w = np.asarray(w)
      self.assertEqual(w.dtype, np.int8, path)
      self.assertLessEqual(np.abs(w).max(), bound, path)
      distinct = quantization.distinct_values_per_channel(w)
      self.assertLessEqual(distinct.max(), 2**bits, path)
      # Abs-max calibration: every channel uses its extreme value.
      per = w.reshape(-1, w.shape[-1])
      live = np.any(per != 0, axis=0)
      np.testing.assert_array_equal(np.abs(per).max(0)[live], bound)
    # No float kernel is left in the params.
    self.assertNotIn("kernel", str(jax.tree_util.tree_structure(
        qvars["params"])))

  def test_int8_accuracy_within_one_point(self):
    fn, qvars = self._quantized(8)
    acc = evaluators.accuracy(fn, qvars, self.evals["test"], 500)
    self.assertLessEqual(abs(acc - self.float_acc), 0.01,
                         (acc, self.float_acc))

  @parameterized.parameters(("static", 8), ("dynamic", 8), ("static", None))
  def test_int4_and_other_modes_run(self, act_calibration, act_bits):
    fn, qvars = self._quantized(4, act_bits, act_calibration)
    acc = evaluators.accuracy(fn, qvars, self.evals["test"], 500)
    # int4 weights cost a few points on this tiny model (float ~96-97 %);
    # how many depends on the CPU type's float rounding of the training
    # (5-6 points on one dev machine type, fewer on another). A broken int4
    # path falls towards chance (10 %).
    self.assertGreater(acc, self.float_acc - 0.08, (acc, self.float_acc))

  def test_forward_is_the_integer_computation(self):
    # Reference for one conv: integer activations and weights, int64 sums,
    # rescaled once by act_scale * kernel_scale.
    _, qvars = self._quantized(8)
    q = qvars["quant"]["stage2_block1"]["conv1"]
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 8), minval=-1,
                           maxval=3)
    spec = quantization._Spec("conv", (2, 2), ((1, 1), (1, 1)), 8, 8,
                              "static")
    got = quantization.quantized_op(x, q["kernel"].astype(np.float32),
                                    q["kernel_scale"], q["act_scale"], spec)
    a = float(q["act_scale"])
    x_int = np.clip(np.round(np.asarray(x) / a), -127, 127).astype(np.int64)
    w_int = np.asarray(q["kernel"]).astype(np.int64)
    acc = jax.lax.conv_general_dilated(
        x_int.astype(np.float32), w_int.astype(np.float32), (2, 2),
        ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    self.assertLess(float(np.max(np.abs(acc))), 2**24)  # Exact in float32.
    want = np.asarray(acc) * a * np.asarray(q["kernel_scale"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)

  def test_input_gradient_is_straight_through(self):
    fn, qvars = self._quantized(8)

    def loss(apply_fn, variables):
      return lambda x: jnp.mean(-jax.nn.log_softmax(apply_fn(variables, x))[
          jnp.arange(len(self.labels)), self.labels])

    g_q = np.asarray(jax.grad(loss(fn, qvars))(self.images))
    g_f = np.asarray(jax.grad(loss(self.float_fn, self.float_vars))(
        self.images))
    self.assertTrue(np.all(np.isfinite(g_q)))
    self.assertGreater(np.linalg.norm(g_q), 0.0)
    cos = np.sum(g_q * g_f) / np.linalg.norm(g_q) / np.linalg.norm(g_f)
    self.assertGreaterEqual(cos, 0.9)

  def test_dequantize_round_trip(self):
    _, qvars = self._quantized(8)
    deq = quantization.dequantize(qvars)
    w = np.asarray(self.float_vars["params"]["stage3_block1"]["conv2"][
        "kernel"])
    w_deq = np.asarray(deq["params"]["stage3_block1"]["conv2"]["kernel"])
    step = np.abs(w).reshape(-1, w.shape[-1]).max(0) / 127.5
    self.assertTrue(np.all(np.abs(w - w_deq) <= step / 2 + 1e-7))

  def test_pruned_zeros_stay_zero(self):
    params = jax.tree.map(np.array, self.float_vars["params"])
    params["stage3_block1"]["conv2"]["kernel"][..., :5] = 0.0
    params["stage3_block1"]["conv2"]["kernel"][0, 0] = 0.0
    qvars = quantization.convert({**self.float_vars, "params": params},
                                 self.calib, weight_bits=4)
    q = np.asarray(qvars["quant"]["stage3_block1"]["conv2"]["kernel"])
    w = params["stage3_block1"]["conv2"]["kernel"]
    self.assertTrue(np.all(q[w == 0] == 0))

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, "static, dynamic"):
      quantization.qconv(8, 8, "percentile")
    with self.assertRaisesRegex(ValueError, "weight_bits"):
      quantization.qdense(16)
    with self.assertRaisesRegex(ValueError, "calibration statistics"):
      quantization.convert(self.float_vars, None, weight_bits=8)


if __name__ == "__main__":
  absltest.main()
