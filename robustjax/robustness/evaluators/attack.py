"""Adversarial robustness: white-box attacks x eps (`evals.attacks`).

One cell per attack name, over all its budgets: eps is a traced value and
the attack is vmapped over the eps grid, so one compiled program covers
every budget. Example i's random start uses `fold_in(cell_key, i)`, where
the cell key depends only on (seed, 'adversarial/<name>'): every model is
attacked from the same starts, and the results depend neither on the chunk
size nor on the number of devices.

Two programs per model: the attack program makes the adversarial images
(`adversarial_images`), the clean evaluator's program classifies them at the
clean cell's batch size (`evals.batch_size`). With `evals.attacks.staged`
an attack that has the form (`attacks.stages`: FGSM, PGD without restarts)
runs instead as a model-free start program and a one-step program called
`steps` times from the host: a PGD-10 that compiles like one step, and one
step program per model and norm shared by FGSM and PGD-Linf; the same
images up to float rounding (bit for bit in the tests' float models; a
program boundary changes XLA:CPU's FMA contractions, which moved one
example of one PTQ cell of the default study); each chunk runs slower, so
it pays when a model is attacked in a chunk or two and compiling dominates
(the default study). A transfer cell crafted on a
model (`evaluators.transfer`) runs the very same attack program, so it adds
no compile, and a model's transfer attack on itself equals its white-box
attack. A budget of 0 is no attack: those rows are the clean correctness
from the clean program, so they equal the clean cell on the same examples
bit for bit, for float and integer-quantized models alike.

Chunks are split over the device mesh (`parallel.make_mesh()`), each
device attacking its own examples (`parallel.per_example`), so a CPU
split into one XLA device per core (the launchers' default) attacks on
every core.

Inside `keep_images(apply_fn, variables, store)` the attack cells run on
that model hand their adversarial images to `store`: a study's transfer
cells (`transfer.keep_source_images`) then reuse its float original's
white-box images instead of attacking it again (the same program on the
same inputs: the same images).
"""

import contextlib
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data.registry import Split
from robustjax.models import batched
from robustjax.robustness import attacks
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks


def _perturb_program(apply_fn: Callable, attack: attacks.Attack, impl,
                     mesh: jax.sharding.Mesh, many: bool = False) -> Callable:
  """(variables, eps), b, images, labels, key data -> float [E, B, ...];
  with `many`, stacked variables of K models -> float [K, E, B, ...].

  On a mesh of several devices the attack runs under `jax.shard_map`: each
  device attacks its own examples, with no communication. Left to XLA's
  sharding propagation, the eps vmap (merged into the convolutions' batch
  axis, eps-major) made the partitioner all-gather the batch in every
  step, which made several devices slower than one.
  """
  def build():
    def perturb(args, images, labels, keys):
      variables, eps = args
      if impl is not None:
        keys = jax.random.wrap_key_data(keys, impl=impl)
      x = pipeline.to_float(images)
      one = lambda v: jax.vmap(lambda e: attack.perturb(
          apply_fn, v, x, labels, keys, e))(eps)
      return jax.vmap(one)(variables) if many else one(variables)
    if mesh.devices.size > 1:
      perturb = parallel.per_example(perturb, mesh, num_replicated=1,
                                     out_axis=1 + many)

    def batch_program(args, b, images, labels, keys):
      del b  # The keys are per example.
      return perturb(args, images, labels, keys)
    return jax.jit(batch_program)
  return base.program("perturb", apply_fn, (attack, impl, mesh, many), build)


def _staged_programs(apply_fn: Callable, stages: attacks.Stages, impl,
                     mesh: jax.sharding.Mesh, many: bool = False):
  """The start and step programs of a staged attack (`attacks.Stages`).

  start: (eps, images, key data) -> (float images [B, ...], adv [E, B, ...],
  step sizes [E, B, 1, ...]); it has no model in it, so every model shares
  it. step: ((variables, eps), images, labels, adv, step sizes) -> adv,
  one per (model, norm): FGSM and PGD-Linf run the same compiled step. With
  `many`, the step takes stacked variables of K models and adv [K, E, B,
  ...] (the K models start from the one start).
  """
  sharded = mesh.devices.size > 1

  def build_start():
    def start(eps, images, keys):
      if impl is not None:
        keys = jax.random.wrap_key_data(keys, impl=impl)
      x = pipeline.to_float(images)
      adv, step_size = jax.vmap(lambda e: stages.start(x, keys, e))(eps)
      return x, adv, step_size
    if sharded:
      start = parallel.per_example(start, mesh, num_replicated=1,
                                   out_axis=(0, 1, 1))
    return jax.jit(start)

  def build_step():
    def step(args, x, labels, adv, step_size):
      variables, eps = args
      one = lambda v, a: jax.vmap(lambda e, a1, s: stages.step(
          apply_fn, v, x, labels, e, s, a1))(eps, a, step_size)
      return jax.vmap(one)(variables, adv) if many else one(variables, adv)
    if sharded:
      step = parallel.per_example(step, mesh, num_replicated=1,
                                  out_axis=1 + many,
                                  batch_axes=(0, 0, 1 + many, 1))
    return jax.jit(step, donate_argnums=3)
  return (base.program("attack_start", None, (stages.start, impl, mesh),
                       build_start),
          base.program("attack_step", apply_fn, (stages.step, mesh, many),
                       build_step))


def adversarial_images(apply_fn: Callable, variables: Any, images, labels,
                       key: jax.Array, eps_grid, attack: attacks.Attack,
                       chunk_size: Optional[int] = None,
                       mesh: Optional[jax.sharding.Mesh] = None,
                       staged: bool = False, many: bool = False) -> np.ndarray:
  """`attack`'s images at every radius: float32 [len(eps_grid), n, ...].

  The white-box evaluator classifies them with the clean program; a transfer
  cell (`evaluators.transfer`) classifies another model's on them. One
  compiled program per (apply_fn, attack, chunk shape) serves both.

  Args: as `robust_correct` (every radius is attacked, 0 included); with
    `many`, `variables` is a sequence of K models sharing `apply_fn`,
    attacked by one vmapped program from the same starts, and the images
    are float32 [K, len(eps_grid), n, ...].
  """
  eps_grid = np.asarray(eps_grid, np.float32)
  n = len(images)
  mesh = mesh or parallel.make_mesh()
  chunk = n if chunk_size is None else max(1, min(int(chunk_size), n))
  keys = attacks.indexed_keys(key, n)
  impl = None
  if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
    impl, keys = jax.random.key_impl(keys), jax.random.key_data(keys)
  args = parallel.replicate(mesh, (batched.stack(variables) if many else
                                   variables, jnp.asarray(eps_grid)))
  stages = attacks.stages(attack) if staged else None
  if stages is None:
    fn = _perturb_program(apply_fn, attack, impl, mesh, many)
    run = lambda b, x, y, k: fn(args, b, x, y, k)
  else:
    start, step = _staged_programs(apply_fn, stages, impl, mesh, many)

    def run(b, images, labels, keys):
      del b  # The keys are per example.
      x, adv, step_size = start(args[1], images, keys)
      if many:  # Every model starts from the same points.
        adv = jnp.broadcast_to(adv, (len(variables),) + adv.shape)
      for _ in range(stages.steps):
        adv = step(args, x, labels, adv, step_size)
      return adv
  return base.run_batches(run, (images, labels, np.asarray(keys)),
                          base.global_batch(chunk, mesh), mesh,
                          axis=1 + many)


def robust_correct(apply_fn: Callable, variables: Any, images, labels,
                   key: jax.Array, eps_grid: Union[Sequence[float], jax.Array],
                   attack: attacks.Attack, chunk_size: Optional[int] = None,
                   mesh: Optional[jax.sharding.Mesh] = None,
                   clean_batch_size: Optional[int] = None,
                   staged: bool = False,
                   on_images: Optional[Callable[[np.ndarray], None]] = None
                   ) -> np.ndarray:
  """Whether each example survives `attack`, for every radius of `eps_grid`.

  Compiled once per (apply_fn, attack, shapes) and cached, so reuse the same
  `apply_fn` object (e.g. `robustjax.models.inference_fn(module)`). The
  attack program makes the adversarial images (`adversarial_images`); the
  clean program classifies them, so a transfer cell from this model reuses
  the attack's compiled program.

  Args:
    apply_fn: `apply_fn(variables, images) -> logits`, inference mode.
    variables: model variables.
    images: [n, ...] uint8 in [0, 255] or float in [0, 1] (numpy or jax;
      global arrays of several processes are gathered first).
    labels: int [n].
    key: PRNG key; example i uses `fold_in(key, i)`.
    eps_grid: radii in pixel units, 1-D; 0 gives the clean correctness,
      computed by the clean program (`base.clean_correct`), not attacked.
    attack: an `Attack`, e.g. `attacks.pgd()` or `attacks.get_attack('fgsm')`.
    chunk_size: attack at most this many images at once (all eps together,
      so the effective batch is chunk_size * len(eps_grid)); rounded up to
      the device count. None: one chunk.
    mesh: device mesh (default: `parallel.make_mesh()`, every device).
    clean_batch_size: batch of the clean program (the eps = 0 rows and the
      classification of the adversarial images); pass the clean cell's
      (`evals.batch_size`) to get its predictions exactly. None: the chunk.
    staged: run an attack that has the form (`attacks.stages`: FGSM, PGD
      without restarts) as a start program and a step program called
      `steps` times from the host, instead of one program: PGD-10
      compiles about as fast as FGSM and FGSM and PGD-Linf share the step
      program, but each chunk runs slower; the same images up to float
      rounding. Worth it when a model's attack is a chunk or two
      (`evals.attacks.staged`).
    on_images: called with the adversarial images of the radii > 0
      (`adversarial_images` of those radii), if any.

  Returns:
    numpy bool [len(eps_grid), n]. Independent of `chunk_size` and `mesh`.
  """
  return robust_correct_many(
      apply_fn, [variables], images, labels, key, eps_grid, attack,
      chunk_size, mesh, clean_batch_size, staged, [on_images])[0]


def robust_correct_many(apply_fn: Callable, variables: Sequence[Any], images,
                        labels, key: jax.Array,
                        eps_grid: Union[Sequence[float], jax.Array],
                        attack: attacks.Attack,
                        chunk_size: Optional[int] = None,
                        mesh: Optional[jax.sharding.Mesh] = None,
                        clean_batch_size: Optional[int] = None,
                        staged: bool = False,
                        on_images: Optional[Sequence[Optional[Callable]]]
                        = None) -> np.ndarray:
  """`robust_correct` of K models sharing `apply_fn`: bool [K, E, n].

  The K models are attacked by one program vmapped over their stacked
  variables, from the same starts (each model's own gradients: a white-box
  attack on each), and each classifies its own adversarial images. One
  model runs exactly as `robust_correct`.

  Args: as `robust_correct`; `variables` holds the K models' variables and
    `on_images` one callback (or None) per model.
  """
  eps_grid = np.asarray(eps_grid, np.float32)
  if eps_grid.ndim != 1:
    raise ValueError(f"eps_grid must be 1-D, got shape {eps_grid.shape}.")
  n = len(images)
  if n == 0:
    raise ValueError("The attack evaluator needs at least one image.")
  if len(labels) != n:
    raise ValueError(f"Got {len(labels)} labels for {n} images.")
  mesh = mesh or parallel.make_mesh()
  chunk = n if chunk_size is None else max(1, min(int(chunk_size), n))
  batch = clean_batch_size or chunk
  one = len(variables) == 1
  zero = eps_grid == 0
  out = np.zeros((len(variables), len(eps_grid), n), bool)
  if zero.any():
    out[:, zero] = base.clean_correct_many(apply_fn, variables, images,
                                           labels, batch, mesh)[:, None]
  if zero.all():
    return out
  adv = adversarial_images(apply_fn, variables[0] if one else variables,
                           images, labels, key, eps_grid[~zero], attack,
                           chunk, mesh, staged, many=not one)
  adv = [adv] if one else adv
  for k, v in enumerate(variables):
    if on_images is not None and on_images[k] is not None:
      on_images[k](adv[k])
    out[k, ~zero] = base.clean_correct_levels(apply_fn, v, adv[k], labels,
                                              batch, mesh)
  return out


def robust_accuracy(apply_fn: Callable, variables: Any, images, labels,
                    key: jax.Array,
                    eps_grid: Union[Sequence[float], jax.Array],
                    attack: attacks.Attack, chunk_size: Optional[int] = None,
                    mesh: Optional[jax.sharding.Mesh] = None,
                    clean_batch_size: Optional[int] = None,
                    staged: bool = False) -> jax.Array:
  """Accuracy under `attack` for every radius of `eps_grid`.

  Args: as `robust_correct`.

  Returns:
    float32 [len(eps_grid)]: the correctly rounded fraction of the n images
    still classified correctly at each eps.
  """
  correct = robust_correct(apply_fn, variables, images, labels, key,
                           eps_grid, attack, chunk_size, mesh,
                           clean_batch_size, staged)
  return jnp.asarray(correct.sum(1).astype(np.float32) /
                     np.float32(correct.shape[1]))


def _attack_kwargs(name: str, block) -> dict:
  if name == "fgsm":
    return {}
  return dict(steps=block["steps"], restarts=block["restarts"])


@dataclasses.dataclass(frozen=True, eq=False)
class AttackCell(base.Cell):
  """Correctness under attack `name` at every eps in `levels`.

  Attributes:
    split: the first `evals.attacks.max_examples` source-test examples.
    attack: the `attacks.Attack` (steps and restarts from the config).
    rng: the cell's PRNG key (from the seed and the cell key).
    chunk_size: examples attacked at once.
    batch_size: the clean cell's batch (`evals.batch_size`), used for eps = 0.
    staged: `evals.attacks.staged` (`robust_correct`).
  """
  split: Split = dataclasses.field(repr=False)
  attack: attacks.Attack
  rng: jax.Array = dataclasses.field(repr=False)
  chunk_size: int
  batch_size: int
  staged: bool = False

  FIELDS = {"attacks": ("names", "eps", "steps", "restarts", "max_examples",
                        "chunk_size", "transfer", "staged"),
            "batch_size": None}

  @classmethod
  def check(cls, evals):
    """Raises ValueError (one sentence) for a bad field of `evals`."""
    checks.check_names(evals, "attacks.names", tuple(sorted(attacks.ATTACKS)),
                     "attack")
    eps = checks.sequence(evals, "attacks.eps", "(0.0, 2/255, 8/255)")
    ok = all(isinstance(e, (int, float, np.number)) and
             not isinstance(e, (bool, np.bool_)) and math.isfinite(e) and
             e >= 0 for e in eps)
    if not ok or (checks.field(evals, "attacks.names") and not eps):
      raise ValueError(f"evals.attacks.eps={eps!r} must hold finite budgets "
                       ">= 0 in pixel units, e.g. (0.0, 2/255, 8/255).")
    for f in ("steps", "restarts", "chunk_size"):
      checks.check_positive_int(evals, f"attacks.{f}")
    checks.check_bool(evals, "attacks.staged")
    checks.check_max_examples(evals, "attacks.max_examples")

  @classmethod
  def cells(cls, evals, test: Split, targets: Dict[str, Split],
            seed: int, data=None) -> List[base.Cell]:
    """One cell per name of `evals.attacks.names`."""
    del targets, data
    a, split = base.named_block(evals, "attacks", test)
    eps = tuple(float(e) for e in a["eps"])
    return [cls("adversarial", name, eps, len(split), split,
                attacks.get_attack(name, **_attack_kwargs(name, a)),
                base.cell_seed(seed, f"adversarial/{name}"),
                a["chunk_size"], checks.field(evals, "batch_size"),
                bool(a["staged"]))
            for name in a["names"]]

  def program_examples(self) -> int:
    """A chunk at every radius, weighted for what an attack step keeps (its
    backward pass holds the forward's activations)."""
    return (self.chunk_size * sum(e > 0 for e in self.levels) *
            ATTACK_MEMORY_FACTOR)

  def models_per_program(self) -> int:
    """Also: the models' adversarial images, held on the host at once,
    within `MANY_IMAGES_BYTES`."""
    image_bytes = 4 * int(np.prod(self.split.images.shape)) * sum(
        e > 0 for e in self.levels)
    return max(1, min(super().models_per_program(),
                      MANY_IMAGES_BYTES // max(1, image_bytes)))

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [num_eps, n]: example i still correct under attack at each eps."""
    return self.correct_many(apply_fn, [variables], mesh)[0]

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [K, num_eps, n]: K models attacked by one vmapped program."""
    def store_for(v):
      store = next((s for f, kept, s in _KEEP_FOR
                    if f is apply_fn and kept is v), None)
      return store and (lambda adv: store(self, adv))
    return robust_correct_many(
        apply_fn, variables, self.split.images, self.split.labels, self.rng,
        self.levels, self.attack, self.chunk_size, mesh, self.batch_size,
        self.staged, [store_for(v) for v in variables])


_KEEP_FOR = []  # (apply_fn, variables, store) of the open `keep_images`.
# An attacked example counts this many times in `Cell.models_per_program`.
ATTACK_MEMORY_FACTOR = 4
# Models attacked together hold their adversarial images on the host at
# once (float32, eps > 0): at most this many bytes of them, or one model.
MANY_IMAGES_BYTES = 1 << 30


@contextlib.contextmanager
def keep_images(apply_fn: Callable, variables: Any,
                store: Callable[["AttackCell", np.ndarray], None]):
  """Attack cells run inside on this model give `store` their images.

  Args:
    apply_fn, variables: the model (matched by identity: the very objects
      the cells are run with).
    store: `store(cell, images)`, images float32 [num eps > 0, n, ...] as
      `adversarial_images` returns them for the cell's radii above 0.
  """
  entry = (apply_fn, variables, store)
  _KEEP_FOR.append(entry)
  try:
    yield
  finally:  # By identity: `==` on two variables trees would compare arrays.
    del _KEEP_FOR[next(i for i, e in enumerate(_KEEP_FOR) if e is entry)]
