"""Tests for robustjax.compress.distillation.

  python -m pytest tests/compress/distillation_test.py
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from robustjax.compress import distillation

STUDENT = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
TEACHER = np.array([[1.0, 0.0, -2.0], [-1.0, 4.0, 0.5]], np.float32)
LABELS = np.array([0, 2], np.int32)


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _reference(s, t, y, temperature, alpha):
  """The formula, written out in float64 numpy."""
  s, t = s.astype(np.float64), t.astype(np.float64)
  pt, ps = _softmax(t / temperature), _softmax(s / temperature)
  kl = np.sum(pt * (np.log(pt) - np.log(ps)), -1)
  ce = -np.log(_softmax(s)[np.arange(len(y)), y])
  return np.mean(alpha * temperature**2 * kl + (1 - alpha) * ce)


class KDLossTest(parameterized.TestCase):

  @parameterized.product(temperature=(1.0, 2.0, 4.0, 10.0),
                         alpha=(0.0, 0.5, 0.9, 1.0))
  def test_matches_formula(self, temperature, alpha):
    got = distillation.kd_loss(STUDENT, TEACHER, LABELS, temperature, alpha)
    want = _reference(STUDENT, TEACHER, LABELS, temperature, alpha)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)

  @parameterized.parameters(1.0, 4.0)
  def test_zero_gradient_when_student_equals_teacher(self, temperature):
    grad = jax.grad(lambda s: distillation.kd_loss(
        s, jnp.asarray(TEACHER), LABELS, temperature, alpha=1.0))(
            jnp.asarray(TEACHER))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)
    loss = distillation.kd_loss(TEACHER, TEACHER, LABELS, temperature, 1.0)
    self.assertAlmostEqual(float(loss), 0.0, places=6)

  def test_gradient_matches_autodiff_of_formula(self):
    def formula(s, t=jnp.asarray(TEACHER), temperature=3.0, alpha=0.8):
      log_pt = jax.nn.log_softmax(t / temperature)
      log_ps = jax.nn.log_softmax(s / temperature)
      kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), -1)
      ce = -jax.nn.log_softmax(s)[jnp.arange(2), LABELS]
      return jnp.mean(alpha * temperature**2 * kl + (1 - alpha) * ce)

    got = jax.grad(lambda s: distillation.kd_loss(
        s, jnp.asarray(TEACHER), LABELS, 3.0, 0.8))(jnp.asarray(STUDENT))
    want = jax.grad(formula)(jnp.asarray(STUDENT))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)

  def test_no_gradient_into_teacher(self):
    grad = jax.grad(lambda t: distillation.kd_loss(
        jnp.asarray(STUDENT), t, LABELS, 4.0, 0.9))(jnp.asarray(TEACHER))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "temperature"):
      distillation.kd_loss(STUDENT, TEACHER, LABELS, 0.0, 0.5)
    with self.assertRaisesRegex(ValueError, "alpha"):
      distillation.kd_loss(STUDENT, TEACHER, LABELS, 2.0, 1.5)


class LossHookTest(absltest.TestCase):

  def test_teacher_logits_come_from_images(self):
    images = jnp.arange(6.0).reshape(2, 3)
    calls = []

    def teacher_apply(variables, x):
      calls.append(x.shape)
      return x * variables["scale"]

    loss_fn = distillation.make_loss_fn(teacher_apply, temperature=2.0,
                                        alpha=0.7)
    # The teacher's variables are an argument (Recipe.loss_args).
    got = loss_fn(jnp.asarray(STUDENT), LABELS, images, {"scale": 0.5})
    want = _reference(STUDENT, np.asarray(images) * 0.5, LABELS, 2.0, 0.7)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    self.assertEqual(calls, [(2, 3)])

  def test_alpha_zero_is_cross_entropy_without_teacher(self):
    def teacher_apply(variables, x):
      raise AssertionError("The control must not run the teacher.")

    loss_fn = distillation.make_loss_fn(teacher_apply, alpha=0.0)
    got = loss_fn(jnp.asarray(STUDENT), LABELS, jnp.zeros((2, 3)), None)
    want = _reference(STUDENT, TEACHER, LABELS, 1.0, 0.0)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
