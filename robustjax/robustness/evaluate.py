"""Evaluation driver: one model on a list of shifts -> result rows.

A model is any `logits = apply_fn(variables, images)` (float, pruned or
quantized alike). The shifts come from an `evals` config block:

  evals.clean = True                       # source test split
  evals.domain = True                      # every loaded target domain
  evals.corruptions.names = (...)          # robustjax.robustness.corruptions
  evals.corruptions.severities = (1, ..., 5)
  evals.corruptions.table = "cifar"        # or "imagenet"
  evals.corruptions.max_examples = 500     # first N source-test images
  evals.attacks.names = ("fgsm", "pgd_linf")
  evals.attacks.eps = (0.0, 0.02, ...)     # pixel units ([0, 1] scale)
  evals.attacks.steps = 10                 # PGD steps
  evals.attacks.restarts = 1
  evals.attacks.max_examples = 200
  evals.batch_size = 500

Work is split into *cells* (one shift type x name, all its levels): a cell
compiles one program for all its levels (severities or eps are traced
values), and a runner can skip cells whose rows already exist. Rows are
`{"shift", "name", "level", "accuracy", "n"}`; the study adds model metadata.
Corrupted images and attack starts depend only on (seed, cell), so every model
is tested on the same inputs.
"""

import collections
import dataclasses
import zlib
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data.registry import Split
from robustjax.train import eval_lib

_CACHE = {}


@dataclasses.dataclass
class Cell:
  """One unit of evaluation work: a shift type x name, over its levels."""
  shift: str
  name: str
  levels: Sequence  # Severities, eps values, or (None,).
  run: Callable[[], List[dict]]

  @property
  def key(self) -> str:
    return f"{self.shift}/{self.name}"


def default_evals() -> ml_collections.ConfigDict:
  """The `evals` block with every field and its default."""
  e = ml_collections.ConfigDict()
  e.clean = True  # Source-domain test accuracy.
  e.domain = True  # Accuracy on every target domain.
  e.batch_size = 500  # Examples per compiled evaluation batch.
  e.corruptions = ml_collections.ConfigDict()
  e.corruptions.names = ()  # Corruption names; () = none.
  e.corruptions.severities = (1, 2, 3, 4, 5)  # Severity levels.
  e.corruptions.table = "cifar"  # Severity table: cifar | imagenet.
  e.corruptions.max_examples = 500  # First N source-test images; -1 = all.
  e.attacks = ml_collections.ConfigDict()
  e.attacks.names = ()  # fgsm | pgd_linf | pgd_l2; () = none.
  e.attacks.eps = (0.0,)  # Budgets in pixel units ([0, 1] scale).
  e.attacks.steps = 10  # PGD iterations.
  e.attacks.restarts = 1  # PGD restarts (worst case kept per example).
  e.attacks.max_examples = 200  # First N source-test images; -1 = all.
  e.attacks.chunk_size = 200  # Examples per attack chunk (memory bound).
  e.level_map = "auto"  # Levels: vmap | map | auto (map on CPU).
  return e


def _seed_for(seed: int, cell_key: str) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed),
                            zlib.crc32(cell_key.encode()) & 0x7FFFFFFF)


def _take(split: Split, n: int) -> Split:
  if n is None or n < 0 or n >= len(split):
    return split
  return Split(split.images[:n], split.labels[:n], split.name)


def _use_map(level_map: str) -> bool:
  if level_map == "auto":
    return jax.default_backend() == "cpu"
  if level_map not in ("map", "vmap"):
    raise ValueError(f"evals.level_map={level_map!r}; use vmap, map or auto.")
  return level_map == "map"


def _corruption_fn(name: str, table: str, use_map: bool):
  """Jitted (images, key, severities) -> corrupted images [S, N, ...]."""
  from robustjax.robustness import corruptions  # pylint: disable=g-import-not-at-top
  cache_key = ("corrupt", name, table, use_map)
  if cache_key not in _CACHE:
    corruption = corruptions.get_corruption(name, table)

    def corrupt(images, key, severities):
      x = pipeline.to_float(images)
      one = lambda s: corruption.apply(x, s, jax.random.fold_in(key, s))
      if use_map:
        return jax.lax.map(one, severities)
      return jax.vmap(one)(severities)
    _CACHE[cache_key] = (None, jax.jit(corrupt))
  return _CACHE[cache_key][1]


def _corruption_kernel(apply_fn, name: str, table: str, use_map: bool):
  """Jitted (variables, images, labels, mask, key, severities) -> #correct."""
  cache_key = ("corruption", id(apply_fn), name, table, use_map)
  if cache_key not in _CACHE:
    corrupt = _corruption_fn(name, table, use_map)

    def correct(variables, images, labels, mask, key, severities):
      xc = corrupt(images, key, severities)
      hits = jax.vmap(lambda x: jnp.argmax(apply_fn(variables, x), -1) ==
                      labels)(xc)
      return jnp.sum(hits * mask, axis=1)
    _CACHE[cache_key] = (apply_fn, jax.jit(correct))
  return _CACHE[cache_key][1]


# Corrupted copies of evaluation splits, shared by every model of a study:
# each corruption is computed once, and each model then needs only forward
# passes. Bounded LRU; bigger sets are corrupted on the fly per model.
CORRUPTED_CACHE_BYTES = 1 << 30
_CORRUPTED = collections.OrderedDict()


def corrupted_split(split: Split, name: str, severities: Sequence[int],
                    key: jax.Array, table: str = "cifar",
                    batch_size: int = 500, level_map: str = "auto"
                    ) -> np.ndarray:
  """Corrupted images of `split` at every severity: float32 [S, N, H, W, C].

  Batch b of the split uses `fold_in(key, b)` (then the severity), exactly as
  the fused per-model kernel does, so both paths see identical images.
  """
  fn = _corruption_fn(name, table, _use_map(level_map))
  sev = jnp.asarray(severities, jnp.int32)
  out = []
  for b, (images, _, mask) in enumerate(pipeline.eval_batches(split,
                                                              batch_size)):
    xc = np.asarray(fn(images, jax.random.fold_in(key, b), sev))
    out.append(xc[:, :int(mask.sum())])
  return np.concatenate(out, axis=1)


def corruption_accuracy(apply_fn, variables, split: Split, name: str,
                        severities: Sequence[int], key: jax.Array,
                        table: str = "cifar", batch_size: int = 500,
                        level_map: str = "auto",
                        mesh: Optional[jax.sharding.Mesh] = None
                        ) -> np.ndarray:
  """Accuracy at each severity of corruption `name` (one compiled program).

  Returns:
    float array [len(severities)].
  """
  mesh = mesh or parallel.make_mesh()
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  nbytes = len(severities) * split.images[0].size * len(split) * 4
  if nbytes <= CORRUPTED_CACHE_BYTES:
    cache_key = (split.name, len(split), name, tuple(severities), table,
                 tuple(np.asarray(jax.random.key_data(key)).ravel()),
                 batch_size)
    if cache_key not in _CORRUPTED:
      _CORRUPTED[cache_key] = corrupted_split(split, name, severities, key,
                                              table, batch_size, level_map)
      while sum(v.nbytes for v in _CORRUPTED.values()) > \
          CORRUPTED_CACHE_BYTES and len(_CORRUPTED) > 1:
        _CORRUPTED.popitem(last=False)
    _CORRUPTED.move_to_end(cache_key)
    images = _CORRUPTED[cache_key]
    return np.array([eval_lib.accuracy(
        apply_fn, variables, Split(images[i], split.labels, split.name),
        batch_size, mesh) for i in range(len(severities))])
  kernel = _corruption_kernel(apply_fn, name, table, _use_map(level_map))
  sev = jnp.asarray(severities, jnp.int32)
  total = np.zeros(len(severities))
  for b, (images, labels, mask) in enumerate(
      pipeline.eval_batches(split, batch_size)):
    batch = parallel.shard_global_batch(mesh, images, labels, mask)
    total += np.asarray(kernel(variables, *batch, jax.random.fold_in(key, b),
                               sev))
  return total / len(split)


def attack_accuracy(apply_fn, variables, split: Split, name: str,
                    eps: Sequence[float], key: jax.Array, steps: int = 10,
                    restarts: int = 1, chunk_size: int = 200) -> np.ndarray:
  """Robust accuracy at each eps of attack `name` (one compiled program)."""
  from robustjax.robustness import attacks  # pylint: disable=g-import-not-at-top
  from robustjax.robustness.evaluators import attack as attack_eval  # pylint: disable=g-import-not-at-top
  kwargs = {} if name == "fgsm" else dict(steps=steps, restarts=restarts)
  cache_key = ("attack", name, tuple(sorted(kwargs.items())))
  if cache_key not in _CACHE:
    _CACHE[cache_key] = (None, attacks.get_attack(name, **kwargs))
  attack = _CACHE[cache_key][1]
  acc = attack_eval.robust_accuracy(
      apply_fn, variables, pipeline.to_float(split.images),
      jnp.asarray(split.labels), key, jnp.asarray(eps, jnp.float32), attack,
      chunk_size=chunk_size)
  return np.asarray(acc, np.float64)


def _check_names(evals):
  """Fails fast (before any work) on unknown corruption / attack names."""
  from robustjax.robustness import attacks, corruptions  # pylint: disable=g-import-not-at-top
  names = evals.corruptions.names
  if isinstance(names, str):
    raise ValueError(f"evals.corruptions.names={names!r} must be a tuple, "
                     "e.g. --config.evals.corruptions.names=\"('fog',)\".")
  for name in names:
    if name not in corruptions.ALL:
      raise ValueError(f"Unknown corruption {name!r} in "
                       "evals.corruptions.names; valid names: "
                       f"{', '.join(corruptions.ALL)}.")
  if evals.corruptions.table not in ("cifar", "imagenet"):
    raise ValueError(f"evals.corruptions.table={evals.corruptions.table!r}; "
                     "use 'cifar' or 'imagenet'.")
  for name in evals.attacks.names:
    if name not in attacks.ATTACKS:
      raise ValueError(f"Unknown attack {name!r} in evals.attacks.names; "
                       f"valid names: {', '.join(sorted(attacks.ATTACKS))}.")


def _row(shift, name, level, accuracy, n):
  return {"shift": shift, "name": name, "level": level,
          "accuracy": float(accuracy), "n": int(n)}


def plan(apply_fn: Callable, variables, evals: ml_collections.ConfigDict,
         test: Split, targets: Dict[str, Split], seed: int,
         mesh: Optional[jax.sharding.Mesh] = None) -> List[Cell]:
  """The cells that evaluate one model on every shift of `evals`.

  Args:
    apply_fn: `logits = apply_fn(variables, images)`.
    variables: the model's variables.
    evals: an `evals` block (see `default_evals`).
    test: the source-domain test split (clean, corruptions, attacks).
    targets: target-domain name -> split (domain shift).
    seed: randomness of corruptions and attack starts (same for all models).
    mesh: device mesh (default: all devices).

  Returns:
    Cells; `cell.run()` returns that cell's rows.
  """
  _check_names(evals)
  cells = []
  bs = evals.batch_size
  if evals.clean:
    cells.append(Cell("clean", "source", (None,), lambda: [_row(
        "clean", "source", None,
        eval_lib.accuracy(apply_fn, variables, test, bs, mesh), len(test))]))
  if evals.domain:
    for name, split in targets.items():
      cells.append(Cell("domain", name, (None,), lambda s=split, n=name: [
          _row("domain", n, None,
               eval_lib.accuracy(apply_fn, variables, s, bs, mesh), len(s))]))
  c = evals.corruptions
  c_split = _take(test, c.max_examples)
  for name in c.names:
    def run_corruption(name=name):
      acc = corruption_accuracy(
          apply_fn, variables, c_split, name, c.severities,
          _seed_for(seed, f"corruption/{name}"), c.table, bs,
          evals.level_map, mesh)
      return [_row("corruption", name, int(s), a, len(c_split))
              for s, a in zip(c.severities, acc)]
    cells.append(Cell("corruption", name, tuple(c.severities),
                      run_corruption))
  a = evals.attacks
  a_split = _take(test, a.max_examples)
  for name in a.names:
    def run_attack(name=name):
      acc = attack_accuracy(apply_fn, variables, a_split, name, a.eps,
                            _seed_for(seed, f"adversarial/{name}"), a.steps,
                            a.restarts, a.chunk_size)
      return [_row("adversarial", name, float(e), v, len(a_split))
              for e, v in zip(a.eps, acc)]
    cells.append(Cell("adversarial", name, tuple(a.eps), run_attack))
  return cells


def evaluate(apply_fn: Callable, variables, evals, test: Split,
             targets: Dict[str, Split], seed: int = 0) -> List[dict]:
  """Runs every cell of `plan(...)` and returns all rows."""
  rows = []
  for cell in plan(apply_fn, variables, evals, test, targets, seed):
    rows.extend(cell.run())
  return rows
