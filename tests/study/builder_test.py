"""robustjax.study.builder: how the study evaluates its models (precision)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from robustjax.compress import recipes
from robustjax.models import factory
from robustjax.robustness import evaluators
from robustjax.study import builder
from robustjax.study import grid
from robustjax.study import runner


def _config(half: bool):
  c = default.get_config("runlocal")
  c.evals.half_precision = half
  return c


def _float_model(c):
  arch = "resnet8:4"
  module = factory.build_model(recipes.with_arch(c, arch))
  x = jnp.zeros((1,) + factory.input_shape(c)[1:], jnp.float32)
  variables = module.init(jax.random.key(0), x)
  return recipes.original(variables, c, None, arch), x


class EvaluationPrecisionTest(absltest.TestCase):

  def test_half_precision_evaluates_float_models_in_bfloat16(self):
    c = _config(True)
    model, x = _float_model(c)
    models = builder.Models(c, "/nonexistent", grid.model_specs(c))
    x = jax.random.uniform(jax.random.key(1), (4,) + x.shape[1:])
    half = models.for_evaluation(model)
    self.assertIsNot(half.apply_fn, model.apply_fn)
    self.assertIs(half.variables, model.variables)
    want = np.asarray(model.apply_fn(model.variables, x), np.float32)
    got = np.asarray(half.apply_fn(half.variables, x), np.float32)
    self.assertFalse(np.array_equal(got, want))  # bf16 rounds differently
    np.testing.assert_allclose(got, want, atol=0.1 * np.abs(want).max())
    # PTQ models keep their float32 simulation; off, nothing changes.
    ptq = recipes.quantize(model, c, None, weight_bits=8,
                           reference=model.variables)
    self.assertIs(models.for_evaluation(ptq), ptq)
    off = builder.Models(_config(False), "/nonexistent", [])
    self.assertIs(off.for_evaluation(model), model)

  def test_environment_records_the_evaluation_precision(self):
    self.assertEqual(runner.environment(_config(True))[
        "evaluation_precision"], "bf16")
    env = runner.environment(_config(False))
    self.assertEqual(env["evaluation_precision"], env["precision"])

  def test_a_non_boolean_is_refused(self):
    evals = _config(False).evals.to_dict()
    evals["half_precision"] = "yes"
    with self.assertRaisesRegex(ValueError, "evals.half_precision"):
      evaluators.check_evals(evals)


if __name__ == "__main__":
  absltest.main()
