"""Tests for robustjax.models (ResNet family and registry).

Parameter counts of the big networks use `jax.eval_shape`: no memory or
compute is spent on ResNet-50's 25 M parameters.
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import models
from robustjax.models import resnet


def _abstract_variables(model, shape):
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct(shape, jnp.float32))


def _random_variables(model, shape, seed=0):
  """He-normal kernels, zero biases, identity BatchNorm; numpy, no compile.

  (`model.init` costs seconds of XLA compilation on a CPU.)
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(
      fill, _abstract_variables(model, shape))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


class ModelsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Published counts: torchvision resnet18 / resnet50 (1000 classes),
      # He et al. (2016) ResNet-20 ~0.27 M (272,474 with 1x1 projection
      # shortcuts where the shape changes, 270 k with option A).
      ("resnet18_imagenet", "resnet18", 1000, 224, 3, 11_689_512),
      ("resnet50_imagenet", "resnet50", 1000, 224, 3, 25_557_032),
      ("resnet20_cifar", "resnet20", 10, 32, 3, 272_474),
  )
  def test_parameter_count(self, name, num_classes, size, channels, expected):
    model = models.get_model(name, num_classes=num_classes)
    variables = _abstract_variables(model, (1, size, size, channels))
    self.assertEqual(_count(variables["params"]), expected)
    # BatchNorm running statistics are variables, not parameters.
    self.assertIn("batch_stats", variables)

  @parameterized.named_parameters(
      ("cifar_resnet8", "resnet8", dict(width=4), (2, 16, 16, 1), 10),
      ("cifar_resnet20", "resnet20", dict(width=4), (3, 32, 32, 3), 7),
      ("imagenet_resnet18", "resnet18", dict(width=8), (2, 64, 64, 3), 5),
      ("imagenet_resnet50", "resnet50", dict(width=4), (2, 64, 64, 3), 31),
  )
  def test_output_shape(self, name, kwargs, shape, num_classes):
    channels = shape[-1]
    model = models.get_model(name, num_classes=num_classes,
                             mean=(0.5,) * channels, std=(0.25,) * channels,
                             **kwargs)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = _abstract_variables(model, shape)
    logits = jax.eval_shape(models.inference_fn(model), variables, x)
    self.assertEqual(logits.shape, (shape[0], num_classes))
    self.assertEqual(logits.dtype, jnp.float32)
    # Training mode uses batch statistics and returns updated running ones.
    logits_train, updates = jax.eval_shape(
        functools.partial(model.apply, train=True, mutable=["batch_stats"]),
        variables, x)
    self.assertEqual(logits_train.shape, (shape[0], num_classes))
    self.assertEqual(jax.tree.structure(updates["batch_stats"]),
                     jax.tree.structure(variables["batch_stats"]))

  def test_forward_values(self):
    model = models.get_model("resnet8", num_classes=10, width=4,
                             mean=(0.5,), std=(0.25,))
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16, 1))
    variables = _random_variables(model, x.shape)
    logits = models.inference_fn(model)(variables, x)
    self.assertEqual(logits.shape, (4, 10))
    self.assertTrue(np.all(np.isfinite(logits)))
    self.assertGreater(float(jnp.std(logits)), 0.0)
    # bfloat16 compute still returns float32 logits.
    half = models.get_model("resnet8", num_classes=10, width=4, mean=(0.5,),
                            std=(0.25,), dtype=jnp.bfloat16)
    logits_half = models.inference_fn(half)(variables, x)
    self.assertEqual(logits_half.dtype, jnp.float32)
    np.testing.assert_allclose(logits_half, logits, atol=0.1, rtol=0.1)

  def test_init_variables_equal_model_init(self):
    """factory.init_variables (lazy, kernels cut on the host) == model.init."""
    from configs import common  # pylint: disable=g-import-not-at-top
    from robustjax.models import factory  # pylint: disable=g-import-not-at-top
    config = common.digits_config("resnet8", 4, epochs=1.0)
    model = factory.build_model(config)
    rng = jax.random.PRNGKey(7)
    got = factory.init_variables(model, config, rng)
    want = model.init(rng, jnp.zeros(factory.input_shape(config)),
                      train=False)
    self.assertEqual(jax.tree.structure(got),
                     jax.tree.structure(dict(want)))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      self.assertEqual(a.dtype, b.dtype)
      np.testing.assert_array_equal(a, b)
    # Under a trace (jit, eval_shape) the kernel init still works.
    kernel = jax.jit(lambda k: resnet.lecun_normal(k, (3, 3, 2, 5)))(rng)
    np.testing.assert_array_equal(kernel, resnet.lecun_normal(rng, (3, 3, 2, 5)))

  def test_imagenet_resolution_shapes(self):
    model = models.get_model("resnet50", num_classes=1000)
    variables = _abstract_variables(model, (1, 224, 224, 3))
    out = jax.eval_shape(models.inference_fn(model), variables,
                         jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.float32))
    self.assertEqual(out.shape, (8, 1000))
    params = variables["params"]
    self.assertEqual(params["conv_init"]["kernel"].shape, (7, 7, 3, 64))
    self.assertEqual(params["stage4_block3"]["conv3"]["kernel"].shape,
                     (1, 1, 512, 2048))
    self.assertEqual(params["head"]["kernel"].shape, (2048, 1000))

  def test_parameter_names(self):
    model = models.get_model("resnet8", num_classes=10, width=4)
    params = _abstract_variables(model, (1, 16, 16, 3))["params"]
    self.assertEqual(
        sorted(params),
        ["bn_init", "conv_init", "head", "stage1_block1", "stage2_block1",
         "stage3_block1"])
    self.assertNotIn("proj_conv", params["stage1_block1"])
    self.assertEqual(params["stage2_block1"]["proj_conv"]["kernel"].shape,
                     (1, 1, 4, 8))
    self.assertEqual(params["stage3_block1"]["conv2"]["kernel"].shape,
                     (3, 3, 16, 16))

  def test_unknown_model_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, "Unknown model 'resnet9'") as cm:
      models.get_model("resnet9", num_classes=10)
    for name in models.MODELS:
      self.assertIn(name, str(cm.exception))
    self.assertIn("config.model.name", str(cm.exception))

  def test_unknown_stem(self):
    model = resnet.ResNet(stage_sizes=(1,), block_cls=resnet.BasicBlock,
                          num_classes=2, width=4, stem="vit")
    with self.assertRaisesRegex(ValueError, "Unknown stem 'vit'"):
      model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


class NormalizeTest(parameterized.TestCase):

  def test_per_channel(self):
    x = jnp.ones((2, 4, 4, 3)) * jnp.asarray([0.2, 0.5, 0.8])
    norm = resnet.Normalize(mean=(0.2, 0.4, 0.6), std=(0.1, 0.2, 0.4))
    y = norm.apply({}, x)
    np.testing.assert_allclose(y[0, 0, 0], [0.0, 0.5, 0.5], atol=1e-6)

  def test_no_parameters(self):
    norm = resnet.Normalize(mean=(0.5,), std=(0.5,))
    self.assertEqual(norm.init(jax.random.PRNGKey(0), jnp.ones((1, 2, 2, 1))),
                     {})

  def test_is_the_first_layer(self):
    # A model with statistics (m, s) on x equals one with (0, 1) on
    # (x - m) / s, with the very same variables.
    kw = dict(num_classes=3, width=4)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    model = models.get_model("resnet8", mean=mean, std=std, **kw)
    plain = models.get_model("resnet8", mean=(0.0,), std=(1.0,), **kw)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = _random_variables(model, x.shape)
    np.testing.assert_allclose(
        model.apply(variables, x),
        plain.apply(variables, (x - jnp.asarray(mean)) / jnp.asarray(std)),
        rtol=1e-4, atol=1e-5)

  def test_channel_mismatch_error(self):
    model = models.get_model("resnet8", num_classes=2, width=4)  # RGB stats.
    with self.assertRaisesRegex(ValueError, "3/3 channels but the images "
                                "have 1.*model.mean"):
      model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))


class InjectionTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # stem + 2 per basic block / 3 per bottleneck + 1 per projection.
      ("resnet8", "resnet8", 1 + 3 * 2 + 2),
      ("resnet18", "resnet18", 1 + 8 * 2 + 3),
      ("resnet50", "resnet50", 1 + 16 * 3 + 4),
  )
  def test_injected_conv_and_dense_are_used(self, name, num_convs):
    calls = {"conv": [], "dense": 0}

    class CountingConv(nn.Conv):

      def __call__(self, x):
        calls["conv"].append(self.kernel_size)
        return super().__call__(x)

    class CountingDense(nn.Dense):

      def __call__(self, x):
        calls["dense"] += 1
        return super().__call__(x)

    model = models.get_model(name, num_classes=10, conv=CountingConv,
                             dense=CountingDense)
    variables = _abstract_variables(model, (1, 64, 64, 3))
    calls = {"conv": [], "dense": 0}
    jax.eval_shape(models.inference_fn(model), variables,
                   jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    self.assertLen(calls["conv"], num_convs)
    self.assertEqual(calls["dense"], 1)

  def test_injected_conv_changes_the_output(self):
    class ZeroConv(nn.Conv):

      def __call__(self, x):
        return super().__call__(x) * 0.0

    kw = dict(num_classes=4, width=4)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = models.get_model("resnet8", **kw)
    variables = _random_variables(model, x.shape)
    zeroed = models.get_model("resnet8", conv=ZeroConv, **kw)
    out = zeroed.apply(variables, x)
    # Every conv outputs 0, so the head sees relu(BN(0)) = relu(bias) = 0
    # and the logits are the head's bias (0 here) for every image.
    np.testing.assert_allclose(out, np.zeros_like(out), atol=1e-6)
    self.assertGreater(float(jnp.abs(model.apply(variables, x)).max()), 1e-3)


if __name__ == "__main__":
  absltest.main()
