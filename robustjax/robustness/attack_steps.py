"""What the attacks are made of: input gradients, eps-ball projections, a step.

`input_gradient` differentiates the summed cross-entropy with respect to the
images only (the model's variables are constants); `project_linf` and
`project_l2` bring a candidate back into the eps-ball around the clean images
and into [0, 1] (`images` exactly when eps = 0); `GradientStep` is one
projected signed (L-inf) or normalised (L2) gradient step, which FGSM takes
once and PGD repeats (robustjax.robustness.attacks). Every function is pure;
`eps` may be a scalar or one value per example, and traced.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
ApplyFn = Callable[[Any, Array], Array]

# Floor for L2 norms, so a zero perturbation or gradient is divided by a
# positive number (and stays exactly zero) instead of producing NaNs.
TINY = 1e-12


def per_example(value: Array, x: Array) -> Array:
  """Broadcasts a scalar or per-example value [batch] against images `x`."""
  value = jnp.asarray(value, x.dtype)
  return value.reshape(value.shape + (1,) * (x.ndim - value.ndim))


def l2_norm(v: Array) -> Array:
  """Per-example L2 norm of `v`, keeping dimensions for broadcasting."""
  axes = tuple(range(1, v.ndim))
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def _is_key_batch(key: Array) -> bool:
  """Whether `key` holds several PRNG keys (typed or raw uint32 keys)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim >= 1
  return key.ndim >= 2


def example_keys(key: Array, batch: int) -> Array:
  """One PRNG key per example: splits a single key, checks a batch of keys."""
  key = jnp.asarray(key)
  if not _is_key_batch(key):
    return jax.random.split(key, batch)
  if key.shape[0] != batch:
    raise ValueError(f"Got {key.shape[0]} PRNG keys for a batch of {batch} "
                     "images; pass one key, or one key per example.")
  return key


def per_example_loss(logits: Array, labels: Array) -> Array:
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def input_gradient(apply_fn: ApplyFn, variables: Any, images: Array,
                   labels: Array) -> Array:
  """Gradient of the summed cross-entropy w.r.t. the images only.

  Args:
    apply_fn: `apply_fn(variables, images) -> logits`.
    variables: model variables; treated as constants.
    images: float [batch, ...].
    labels: int [batch].

  Returns:
    d loss / d images, shape of `images`. Example i's gradient depends only on
    example i (inference mode), so summing keeps per-example gradients.
  """
  def loss(x):
    return jnp.sum(per_example_loss(apply_fn(variables, x), labels))
  return jax.grad(loss)(images)


def project_linf(adv: Array, images: Array, eps: Array) -> Array:
  """Clips `adv` to the L-inf ball of radius `eps` around `images` and [0, 1].

  Args:
    adv: candidate images.
    images: clean images in [0, 1].
    eps: radius, scalar or [batch].

  Returns:
    The nearest point (in any norm) of the intersection of the two boxes;
    `images` exactly when `eps == 0`.
  """
  eps = per_example(eps, images)
  lower = jnp.maximum(images - eps, 0.0)
  upper = jnp.minimum(images + eps, 1.0)
  return jnp.clip(adv, lower, upper)


def project_l2(adv: Array, images: Array, eps: Array) -> Array:
  """Rescales the perturbation into the L2 ball of radius `eps`, then clips.

  Args:
    adv: candidate images.
    images: clean images in [0, 1].
    eps: radius, scalar or [batch].

  Returns:
    `images + delta * min(1, eps / ||delta||)`, clipped to [0, 1]; clipping
    only shrinks each coordinate of the perturbation, so the result stays in
    the ball. `images` exactly when `eps == 0`.
  """
  eps = per_example(eps, images)
  delta = adv - images
  factor = jnp.minimum(1.0, eps / jnp.maximum(l2_norm(delta), TINY))
  return jnp.clip(images + delta * factor, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class GradientStep:
  """One projected gradient step of an attack, L-inf (sign) or L2.

  `step(apply_fn, variables, images, labels, eps, step_size, adv)` moves
  `adv` by `step_size` along the sign (L-inf) or the normalised direction
  (L2) of the loss gradient at `adv`, then projects onto the eps-ball around
  `images` and [0, 1]. FGSM is this step from the clean images with
  `step_size = eps`; PGD repeats it. Hashable by `norm`, so FGSM and
  PGD-Linf share one compiled step program (`Stages`).
  """
  norm: str

  def __call__(self, apply_fn, variables, images, labels, eps, step_size,
               adv):
    grad = input_gradient(apply_fn, variables, adv, labels)
    if self.norm == "linf":
      direction = jnp.sign(grad)
      return project_linf(adv + step_size * direction, images, eps)
    direction = grad / jnp.maximum(l2_norm(grad), TINY)
    return project_l2(adv + step_size * direction, images, eps)
