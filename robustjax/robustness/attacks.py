"""White-box adversarial attacks (FGSM, PGD-Linf, PGD-L2), pure functions.

Attacks follow an optax-like functional API: a factory returns an `Attack`, a
NamedTuple holding a name and a pure `perturb` function

  adv = attack.perturb(apply_fn, variables, images, labels, key, eps)

that sees a model only through the suite's calling convention
`logits = apply_fn(variables, images)` (inference mode). Float, pruned and
quantized models are therefore attacked alike; a quantized model must give a
useful input gradient (e.g. a straight-through estimator
`f + stop_gradient(q - f)`), otherwise the attack sees gradient masking.

Conventions:

* Images are float NHWC in [0, 1]; `eps` is in the same pixel units
  (`8 / 255` means what it says) and is an ordinary traced value, so
  `jax.vmap` over an eps grid compiles the attack once.
* The loss is the cross-entropy of the logits with integer labels, summed over
  the batch; the gradient is taken w.r.t. the input only (`variables` are
  constants, no weight gradients are formed).
* Every iterate is projected onto the eps-ball around the clean images (L-inf:
  element-wise clip; L2: per-example rescaling of the perturbation) and onto
  [0, 1]. For L2 the rescaling comes first and clipping to [0, 1] can only
  shrink the perturbation, so the result lies in both sets (as in Madry et al.
  and torchattacks; it is feasible, not the Euclidean projection onto the
  intersection).
* `eps = 0` returns the clean images bit for bit: the random start scales with
  eps and the L2 normalisations are guarded against division by zero.
* Randomness is per example: `key` is one PRNG key (split over the batch) or a
  batch of keys, one per example. `indexed_keys` derives example keys from
  the example's index, so the attack evaluator's results do not depend on
  its chunk size or the number of devices.

PGD's default step size is relative, `2.5 * eps / steps` (Madry et al. 2018),
which gives the common 2/255 for eps = 8/255 and 10 steps; a float
`step_size` is absolute (pixel units) and used for every eps.

On CPU, PGD is unrolled into straight-line code by default: XLA:CPU runs the
same steps inside a `lax.fori_loop` much slower. The unrolled step is
a nested `jax.jit`, so the model is traced once per program, not once per
step. Elsewhere the loop is a `lax.fori_loop`, which compiles faster.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robustjax.robustness import attack_steps

Array = jax.Array
ApplyFn = attack_steps.ApplyFn

class Attack(NamedTuple):
  """An adversarial attack.

  Attributes:
    name: registry name, e.g. 'fgsm', 'pgd_linf' or 'pgd_l2'.
    perturb: pure function
      `perturb(apply_fn, variables, images, labels, key, eps) -> adv_images`.
      `apply_fn(variables, images) -> logits` is the model in inference mode;
      `images` float [batch, ...] in [0, 1]; `labels` int [batch]; `key` a
      PRNG key or one key per example; `eps` the radius in pixel units, a
      scalar or one value per example (may be traced). Returns adversarial
      images of the shape and dtype of `images`. Jit it with `apply_fn`
      static: `jax.jit(attack.perturb, static_argnums=0)`.
  """
  name: str
  perturb: Callable[..., Array]


# ----------------------------------------------------------------------------
# Attacks. `perturb` functions are frozen dataclasses: they compare and hash
# by value, so two `pgd()` calls with the same settings share compiled code in
# the evaluators' jit cache.


class Stages(NamedTuple):
  """An attack as a start and `steps` repeated gradient steps.

  `perturb(...)` equals, up to float rounding (bit for bit on the float
  models of `tests/robustness/attacks_test.py`; the start's and the steps'
  program boundaries can change XLA's FMA contractions):

    adv, step_size = stages.start(images, keys, eps)
    for _ in range(stages.steps):
      adv = stages.step(apply_fn, variables, images, labels, eps, step_size,
                        adv)

  with `keys` one PRNG key per example. The attack evaluator compiles the
  start (no model in it) and the step as separate programs and loops on the
  host: a PGD-10 program then compiles about as fast as one step, and FGSM
  and PGD-Linf share the step program (`evaluators.attack`).

  Attributes:
    start: `(images, keys, eps) -> (adv, step_size)`, model-free and
      hashable; `step_size` has shape [batch, 1, ...] (broadcasts against
      `images`).
    step: an `attack_steps.GradientStep`.
    steps: how many times to apply it.
  """
  start: Callable[..., Any]
  step: attack_steps.GradientStep
  steps: int


@dataclasses.dataclass(frozen=True)
class _FGSMStart:
  """FGSM's start: the clean images, step size eps."""

  def __call__(self, images, keys, eps):
    del keys  # Deterministic.
    return images, _step_size(eps, images)


def _step_size(value, images):
  """`value` (scalar or per example) as a [batch, 1, ...] array."""
  value = attack_steps.per_example(value, images)
  return jnp.broadcast_to(value, images.shape[:1] + value.shape[1:])


@dataclasses.dataclass(frozen=True)
class _FGSM:
  """Fast gradient sign method (Goodfellow et al. 2015), L-inf."""

  def stages(self) -> Stages:
    return Stages(_FGSMStart(), attack_steps.GradientStep("linf"), 1)

  def __call__(self, apply_fn, variables, images, labels, key, eps):
    del key  # Deterministic.
    adv, step_size = _FGSMStart()(images, None, eps)
    return attack_steps.GradientStep("linf")(apply_fn, variables, images,
                                             labels, eps, step_size, adv)


@dataclasses.dataclass(frozen=True)
class _PGD:
  """Projected gradient descent (Madry et al. 2018), L-inf or L2."""
  norm: str
  steps: int
  step_size: Optional[float]
  restarts: int
  random_start: bool
  unroll: Optional[bool]

  def _project(self, adv, images, eps):
    if self.norm == "linf":
      return attack_steps.project_linf(adv, images, eps)
    return attack_steps.project_l2(adv, images, eps)

  def _random_start(self, images, keys, eps):
    """A random point of the ball (scaled by eps, so eps = 0 adds nothing)."""
    shape = images.shape[1:]
    eps = attack_steps.per_example(eps, images)
    if self.norm == "linf":
      noise = jax.vmap(lambda k: jax.random.uniform(
          k, shape, images.dtype, -1.0, 1.0))(keys)
      return self._project(images + eps * noise, images, eps)
    # L2 as in torchattacks: Gaussian direction, radius uniform in [0, eps].
    def draw(k):
      k_dir, k_radius = jax.random.split(k)
      direction = jax.random.normal(k_dir, shape, images.dtype)
      return direction, jax.random.uniform(k_radius, (), images.dtype)
    direction, radius = jax.vmap(draw)(keys)
    direction = direction / jnp.maximum(attack_steps.l2_norm(direction),
                                        attack_steps.TINY)
    noise = direction * attack_steps.per_example(radius, images) * eps
    return self._project(images + noise, images, eps)

  def _step(self, apply_fn, variables, images, labels, eps, step_size, adv):
    return attack_steps.GradientStep(self.norm)(
        apply_fn, variables, images, labels, eps, step_size, adv)

  def _start(self, images, keys, eps):
    """The first iterate and the step size ([batch, 1, ...])."""
    if self.step_size is None:
      step_size = _step_size(
          2.5 * attack_steps.per_example(eps, images) / self.steps, images)
    else:
      step_size = _step_size(self.step_size, images)
    adv = (self._random_start(images, keys, eps) if self.random_start
           else images)
    return adv, step_size

  def stages(self) -> Optional[Stages]:
    """The start + step decomposition (None with restarts: the worst case
    over restarts is kept inside one program)."""
    if self.restarts != 1:
      return None
    return Stages(_PGDStart(self), attack_steps.GradientStep(self.norm),
                  self.steps)

  def _run(self, apply_fn, variables, images, labels, keys, eps, unroll):
    """One PGD run from a (random) start; returns the last iterate."""
    adv, step_size = self._start(images, keys, eps)
    if unroll:
      # One traced step, called `steps` times: a nested jit is traced (and
      # lowered) once, then XLA inlines the calls into the same straight-line
      # program (instead of tracing the model once per step).
      step = jax.jit(functools.partial(self._step, apply_fn))
      for _ in range(self.steps):
        adv = step(variables, images, labels, eps, step_size, adv)
      return adv
    step = functools.partial(self._step, apply_fn, variables, images, labels,
                             eps, step_size)
    return jax.lax.fori_loop(0, self.steps, lambda _, a: step(a), adv)

  def __call__(self, apply_fn, variables, images, labels, key, eps):
    unroll = self.unroll
    if unroll is None:
      unroll = jax.default_backend() == "cpu"
    keys = attack_steps.example_keys(key, images.shape[0])
    restart_keys = lambda r: _restart_keys(keys, r)
    run = functools.partial(self._run, apply_fn, variables, images, labels,
                            eps=eps, unroll=unroll)
    if self.restarts == 1:
      return run(restart_keys(0))

    def evaluate(adv):
      logits = apply_fn(variables, adv)
      fooled = jnp.argmax(logits, axis=-1) != labels
      return fooled, attack_steps.per_example_loss(logits, labels)

    def restart(r, best):
      best_adv, best_fooled, best_loss = best
      adv = run(restart_keys(r))
      fooled, loss = evaluate(adv)
      # Worst case per example: fooling beats not fooling, then higher loss.
      better = (fooled & ~best_fooled) | ((fooled == best_fooled) &
                                          (loss > best_loss))
      mask = better.reshape(better.shape + (1,) * (images.ndim - 1))
      return (jnp.where(mask, adv, best_adv),
              best_fooled | fooled, jnp.where(better, loss, best_loss))

    first = run(restart_keys(0))
    best = (first, *evaluate(first))
    if unroll:
      for r in range(1, self.restarts):
        best = restart(r, best)
    else:
      best = jax.lax.fori_loop(1, self.restarts, restart, best)
    return best[0]


def _restart_keys(keys, r):
  """Restart r's key of each example: `fold_in(example_key, r)`."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys, r)


@dataclasses.dataclass(frozen=True)
class _PGDStart:
  """PGD's start (random point of the ball, restart 0) and step size."""
  pgd: _PGD

  def __call__(self, images, keys, eps):
    keys = _restart_keys(attack_steps.example_keys(keys, images.shape[0]), 0)
    return self.pgd._start(images, keys, eps)  # pylint: disable=protected-access


def stages(attack: Attack) -> Optional[Stages]:
  """`attack` as a start and repeated steps (`Stages`), or None.

  None for attacks without that form (PGD with restarts > 1, attacks from
  outside this module): run their `perturb` as one program.
  """
  fn = getattr(attack.perturb, "stages", None)
  return fn() if fn is not None else None


def fgsm() -> Attack:
  """Fast gradient sign method, L-inf: `clip(x + eps * sign(grad))`.

  Returns:
    An `Attack` named 'fgsm'; its `perturb` ignores the key.
  """
  return Attack("fgsm", _FGSM())


def pgd(norm: str = "linf", steps: int = 10,
        step_size: Optional[float] = None, restarts: int = 1,
        random_start: bool = True, unroll: Optional[bool] = None) -> Attack:
  """Projected gradient descent on the cross-entropy, L-inf or L2.

  Args:
    norm: 'linf' (signed-gradient steps, element-wise clip) or 'l2'
      (normalised-gradient steps, per-example rescaling).
    steps: gradient steps per restart.
    step_size: absolute step in pixel units; None (default) means
      `2.5 * eps / steps`, relative to each eps (2/255 for eps = 8/255 and
      10 steps).
    restarts: independent random starts; per example the worst case is kept
      (a fooling restart over a non-fooling one, then the higher loss), so an
      example counts as robust only if no restart fools it. Restart r uses
      `fold_in(example_key, r)`, so more restarts never raise the accuracy
      for the same key.
    random_start: start from a uniform point of the L-inf ball (L2: Gaussian
      direction, radius uniform in [0, eps]) instead of the clean image.
    unroll: True: steps (and restarts) as a Python loop (straight-line code,
      fastest on CPU, compiles slower); False: `lax.fori_loop`; None: True
      on the CPU backend, False elsewhere.

  Returns:
    An `Attack` named 'pgd_linf' or 'pgd_l2'.

  Raises:
    ValueError: for an unknown norm or non-positive steps or restarts.
  """
  if norm not in ("linf", "l2"):
    raise ValueError(f"Unknown PGD norm {norm!r}; use 'linf' or 'l2'.")
  if steps < 1 or restarts < 1:
    raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got "
                     f"steps={steps}, restarts={restarts}.")
  return Attack(f"pgd_{norm}", _PGD(norm, int(steps), step_size,
                                    int(restarts), bool(random_start),
                                    unroll))


ATTACKS = {
    "fgsm": fgsm,
    "pgd_linf": functools.partial(pgd, "linf"),
    "pgd_l2": functools.partial(pgd, "l2"),
}


def get_attack(name: str, **kwargs: Any) -> Attack:
  """Builds a registered attack by name.

  Args:
    name: 'fgsm', 'pgd_linf' or 'pgd_l2'.
    **kwargs: arguments of the factory (`pgd`'s except `norm`).

  Returns:
    The `Attack`.

  Raises:
    ValueError: if `name` is not registered (the message lists the names).
  """
  if name not in ATTACKS:
    raise ValueError(f"Unknown attack {name!r}. Registered attacks: "
                     f"{', '.join(sorted(ATTACKS))}.")
  return ATTACKS[name](**kwargs)


# ----------------------------------------------------------------------------
# Per-example correctness over an eps grid (the kernel of the attack
# evaluator, `robustjax.robustness.evaluators.attack`, which batches it over
# the device mesh).


def correct_under_attack(apply_fn: ApplyFn, attack: Attack, variables: Any,
                         images: Array, labels: Array, keys: Array,
                         eps_grid: Array) -> Array:
  """Whether each example is still classified correctly, at every eps.

  Pure (jit it with `apply_fn` and `attack` static or closed over); the
  attack is vmapped over the eps grid, so one compiled program serves every
  radius.

  Args:
    apply_fn: `apply_fn(variables, images) -> logits`, inference mode.
    attack: an `Attack`.
    variables: model variables.
    images: float [batch, ...] in [0, 1].
    labels: int [batch].
    keys: one PRNG key per example (e.g. from `indexed_keys`).
    eps_grid: float [num_eps] radii in pixel units; eps = 0 leaves the
      images unchanged, so that row is the clean correctness exactly.

  Returns:
    bool [num_eps, batch]. With restarts, an example counts as correct only
    if no restart fools it (the attack keeps the per-example worst case).
  """
  def correct(eps):
    adv = attack.perturb(apply_fn, variables, images, labels, keys, eps)
    return jnp.argmax(apply_fn(variables, adv), axis=-1) == labels
  return jax.vmap(correct)(eps_grid)


def indexed_keys(key: Array, n: int) -> Array:
  """Key of example i: `fold_in(key, i)`, independent of batching/devices."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))
