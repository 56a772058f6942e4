"""Knowledge distillation (Hinton et al. 2015) as a trainer loss function.

  loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
         + (1 - alpha) * CE(s, y)

with student logits `s`, teacher logits `t`, labels `y`, temperature `T`.
The T^2 factor keeps the soft-target gradients on the scale of the hard
ones when T changes. The teacher is frozen and runs in inference mode
(BatchNorm running statistics) on the same (augmented) images the student
sees; its logits never receive a gradient.

  loss_fn = distillation.make_loss_fn(teacher_apply, temperature=4.0,
                                      alpha=0.9)
  train.train_and_evaluate(student_config, workdir, train.Recipe(
      loss_fn=loss_fn, loss_args=teacher_variables))

The control is the same student and config trained with plain
cross-entropy (`alpha = 0`, which `make_loss_fn` turns into the trainer's
cross-entropy without running the teacher).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from robustjax.train import steps


@jax.custom_vjp
def _kl_from_logits(student, teacher):
  """KL(softmax(teacher) || softmax(student)) per row.

  The gradient w.r.t. the student logits is `softmax(student) -
  softmax(teacher)`, computed so that it is exactly zero when student ==
  teacher (autodiff of the formula leaves `softmax * (1 - sum(p_t))`
  rounding residue of ~1e-7). No gradient flows to the teacher.
  """
  log_pt = jax.nn.log_softmax(teacher)
  log_ps = jax.nn.log_softmax(student)
  return jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)


def _kl_fwd(student, teacher):
  return _kl_from_logits(student, teacher), (student, teacher)


def _kl_bwd(res, g):
  student, teacher = res
  diff = (jnp.exp(jax.nn.log_softmax(student)) -
          jnp.exp(jax.nn.log_softmax(teacher)))
  return g[..., None] * diff, jnp.zeros_like(teacher)


_kl_from_logits.defvjp(_kl_fwd, _kl_bwd)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array,
            labels: jax.Array, temperature: float = 4.0,
            alpha: float = 0.9) -> jax.Array:
  """Hinton KD loss, averaged over the batch.

  Args:
    student_logits: [batch, classes].
    teacher_logits: [batch, classes] (treated as constants).
    labels: int [batch].
    temperature: softmax temperature T > 0.
    alpha: weight of the soft (KL) term in [0, 1].

  Returns:
    Scalar `alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(s, y)`.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  s = student_logits.astype(jnp.float32)
  kl = _kl_from_logits(s / temperature, t / temperature)
  ce = optax.softmax_cross_entropy_with_integer_labels(s, labels)
  return jnp.mean(alpha * temperature**2 * kl + (1.0 - alpha) * ce)


@steps.same_object_for_same_args  # Same settings, same object.
def make_loss_fn(teacher_apply: Callable[[Any, jax.Array], jax.Array],
                 temperature: float = 4.0, alpha: float = 0.9):
  """A `Recipe.loss_fn` `(logits, labels, images, teacher_variables) -> loss`.

  The teacher's variables are an argument of the loss (the trainer passes
  `Recipe.loss_args` to every step), not constants closed over: students of
  one architecture distilled from different teachers of one architecture
  share one compiled train step, and a large teacher is not baked into it.

  Args:
    teacher_apply: `logits = teacher_apply(variables, images)` in inference
      mode (e.g. `models.inference_fn(teacher_model)`).
    temperature: T.
    alpha: soft-target weight; 0 gives plain cross-entropy (the control) and
      skips the teacher.

  Returns:
    The loss function; the same object for the same arguments (with
    `models.inference_fn`, the same for every teacher of one architecture),
    so such students share one jitted train step.
  """
  if alpha == 0.0:
    def ce_loss(logits, labels, images, teacher_variables):
      del images, teacher_variables
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels))
    return ce_loss

  def loss_fn(logits, labels, images, teacher_variables):
    teacher_logits = jax.lax.stop_gradient(
        teacher_apply(teacher_variables, images))
    return kd_loss(logits, teacher_logits, labels, temperature, alpha)

  return loss_fn
