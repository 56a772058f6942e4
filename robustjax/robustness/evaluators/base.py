"""What every evaluator shares: cells, results, one jit cache, one batch loop.

A `Cell` is one unit of evaluation work (a shift type x name, over all its
levels), built from the `evals` config block without a model, so a runner can
list every cell's key before a model exists and skip finished ones. Running a
cell on `(apply_fn, variables)` gives a `CellResult`: the result rows and the
per-example correctness behind them (the study pairs models example by
example).

Compiled programs live in one cache keyed on the `apply_fn` object itself
(the cache holds it, so a key can never be reused by another function) and
the program's static settings: two models of one architecture share
`robustjax.models.inference_fn(module)` and so every compiled program.
`run_batches` is the one batching loop: fixed-shape, zero-padded batches
sharded over the device mesh, per-example outputs with the padding dropped.
"""

import collections
import dataclasses
import zlib
from typing import Any, Callable, Hashable, List, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.models import batched
from robustjax.robustness.evaluators import checks

SHIFTS = ("clean", "domain", "corruption", "adversarial")


# Models stacked in one evaluation program hold at most this many bytes of
# float32 inputs together (`Cell.models_per_program`); more run as several
# programs. E.g. 224 px batches of 128 allow 6 models, 32 px batches of
# 1000 allow 43.
MANY_INPUT_BYTES = 512 << 20


@dataclasses.dataclass(frozen=True)
class CellResult:
  """What a cell measured on one model.

  Attributes:
    rows: one dict per level, `{"shift", "name", "level", "accuracy", "n"}`.
    correct: bool [num_levels, n]; `correct[l, i]` says whether example i of
      the cell's split was classified correctly at level l. Row l's accuracy
      is `correct[l].mean()`.
  """
  rows: List[dict]
  correct: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
  """One unit of evaluation work: a shift type x name, over all its levels.

  Attributes:
    shift: 'clean', 'domain', 'corruption' or 'adversarial'.
    name: 'source', a target domain, a corruption or an attack name.
    levels: severities (ints), eps values (floats), or `(None,)`.
    n: number of examples the cell evaluates.
  """
  shift: str
  name: str
  levels: tuple
  n: int

  @property
  def key(self) -> str:
    return f"{self.shift}/{self.name}"

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
    """Per-example correctness, bool [len(levels), n]; see subclasses."""
    raise NotImplementedError

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
    """`correct` of K models that share `apply_fn`: bool [K, levels, n].

    This default runs them one by one; cell types whose inputs do not
    depend on the model override it with one program over the K stacked
    models (`stack`), which fills an accelerator K times better.
    """
    return np.stack([np.asarray(self.correct(apply_fn, v, mesh), bool)
                     for v in variables])

  def run(self, apply_fn: Callable, variables: Any,
          mesh: Optional[jax.sharding.Mesh] = None) -> CellResult:
    """Evaluates one model on this cell.

    Args:
      apply_fn: `logits = apply_fn(variables, images_in_0_1)`, inference
        mode (e.g. `robustjax.models.inference_fn(module)`).
      variables: the model's variables.
      mesh: device mesh (default: `parallel.make_mesh()`, every device).

    Returns:
      The cell's rows and per-example correctness.
    """
    return self._result(self.correct(apply_fn, variables,
                                     mesh or parallel.make_mesh()))

  def run_many(self, apply_fn: Callable, variables: Sequence[Any],
               mesh: Optional[jax.sharding.Mesh] = None) -> List[CellResult]:
    """Evaluates K models that share `apply_fn` (and the shapes of their
    variables) on this cell: one `CellResult` per model, in order.

    One model runs exactly as `run`; several run as one vmapped program
    where the cell type has one (`correct_many`), with every model's
    result equal to its own `run` up to float reassociation.
    """
    mesh = mesh or parallel.make_mesh()
    if len(variables) == 1:
      return [self.run(apply_fn, variables[0], mesh)]
    k = self.models_per_program()
    results = []
    for part in (variables[i:i + k] for i in range(0, len(variables), k)):
      if len(part) == 1:
        results.append(self.run(apply_fn, part[0], mesh))
        continue
      correct = np.asarray(self.correct_many(apply_fn, part, mesh), bool)
      if correct.shape[0] != len(part):
        raise AssertionError(f"Cell {self.key} measured {correct.shape[0]} "
                             f"models, not {len(part)}.")
      results += [self._result(c) for c in correct]
    return results

  def example_shape(self) -> tuple:
    """The shape of one input example (of the cell's split)."""
    return tuple(self.split.images.shape[1:])

  def program_examples(self) -> int:
    """Examples one model's share of a program holds (its batch)."""
    return int(getattr(self, "batch_size", 1))

  def models_per_program(self) -> int:
    """How many models `run_many` stacks in one program: their float32
    inputs within `MANY_INPUT_BYTES` (a proxy for their activations, which
    grow with the inputs for a given network), at least one."""
    per_model = 4 * int(np.prod(self.example_shape())) * max(
        1, self.program_examples())
    return max(1, MANY_INPUT_BYTES // per_model)

  def _result(self, correct) -> CellResult:
    correct = np.asarray(correct, bool)
    if correct.shape != (len(self.levels), self.n):
      raise AssertionError(f"Cell {self.key} measured {correct.shape}, not "
                           f"{(len(self.levels), self.n)}.")
    rows = [{"shift": self.shift, "name": self.name, "level": level,
             "accuracy": float(c.mean()), "n": int(self.n)}
            for level, c in zip(self.levels, correct)]
    return CellResult(rows, correct)


# ----------------------------------------------------------------------------
# The jit cache.

# Least recently used programs beyond this many are dropped (and their
# executables freed); a study of many architectures stays bounded.
MAX_PROGRAMS = 256
_PROGRAMS = collections.OrderedDict()


class _ByIdentity:
  """Key for an unhashable function: compares by identity, holds the object."""

  def __init__(self, obj):
    self.obj = obj

  def __hash__(self):
    return id(self.obj)

  def __eq__(self, other):
    return isinstance(other, _ByIdentity) and other.obj is self.obj


def program(kind: str, apply_fn: Optional[Callable], statics: Hashable,
            build: Callable[[], Callable]) -> Callable:
  """The compiled program `kind` for `apply_fn` and `statics`, built once.

  Args:
    kind: what the program computes, e.g. 'clean' or 'attack'.
    apply_fn: the model function the program closes over (None: none). The
      cache keeps a reference to it, so its key stays valid.
    statics: hashable settings that change the program (names, flags).
    build: returns the jitted program; called on the first request only.

  Returns:
    The jitted program.
  """
  try:
    hash(apply_fn)
    fn_key = apply_fn
  except TypeError:
    fn_key = _ByIdentity(apply_fn)
  key = (kind, fn_key, statics)
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
    while len(_PROGRAMS) > MAX_PROGRAMS:
      _PROGRAMS.popitem(last=False)
  _PROGRAMS.move_to_end(key)
  return _PROGRAMS[key]


def clear_programs():
  """Forgets every compiled program (frees their executables)."""
  _PROGRAMS.clear()


# ----------------------------------------------------------------------------
# The batch loop.


def global_batch(batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """`batch_size` rounded up to a multiple of the mesh's device count."""
  n = mesh.devices.size
  return -(-int(batch_size) // n) * n


def _host(x) -> np.ndarray:
  """A (possibly multi-process) global array as a whole numpy array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def run_batches(fn: Callable, arrays: Sequence[Any], batch_size: int,
                mesh: jax.sharding.Mesh, axis: int = 1) -> np.ndarray:
  """Runs `fn` over fixed-shape batches of `arrays`; per-example outputs.

  Batch b holds examples `[b * batch_size, (b + 1) * batch_size)`; the last
  one is zero-padded to the same shape (one compilation), and the padding's
  outputs are dropped. Each batch is sharded over the mesh's data axis with
  `parallel.shard_global_batch`: every process holds the whole arrays and
  contributes its slice. Inputs that are global arrays spread over several
  processes are gathered first (evaluation splits are small).

  Args:
    fn: `fn(b, *batch) -> array` with the example axis at `axis`; `b` is the
      batch index (pass it as a traced int to keep one compilation).
    arrays: per-example arrays (host numpy or jax arrays), same length n.
    batch_size: examples per batch; a multiple of the device count.
    mesh: the device mesh.
    axis: the example axis of `fn`'s output.

  Returns:
    numpy array: `fn`'s outputs for the n examples, concatenated on `axis`.
  """
  arrays = [_host(a) for a in arrays]
  n = len(arrays[0])
  if n == 0 or any(len(a) != n for a in arrays):
    raise ValueError(f"Need equally long, non-empty per-example arrays; got "
                     f"lengths {[len(a) for a in arrays]}.")
  parallel.check_batch_size(batch_size, mesh, "evaluation batch")
  outs, pending = [], None
  for b, start in enumerate(range(0, n, batch_size)):
    batch = [a[start:start + batch_size] for a in arrays]
    real = len(batch[0])
    if real < batch_size:
      batch = [np.concatenate([a, np.zeros((batch_size - real,) + a.shape[1:],
                                           a.dtype)]) for a in batch]
    sharded = parallel.shard_global_batch(mesh, *batch)
    out = fn(b, *(sharded if len(batch) > 1 else (sharded,)))
    if pending is not None:  # Dispatch the next batch before waiting.
      outs.append(_host(pending[0]).take(range(pending[1]), axis))
    pending = (out, real)
  outs.append(_host(pending[0]).take(range(pending[1]), axis))
  return np.concatenate(outs, axis)


# ----------------------------------------------------------------------------
# Clean correctness: the program of the clean, domain and (cached) corruption
# cells, and of `accuracy`.


def _clean_program(apply_fn: Callable) -> Callable:
  def build():
    def correct(variables, b, images, labels):
      del b
      logits = apply_fn(variables, pipeline.to_float(images))
      return (jnp.argmax(logits, -1) == labels)[None]
    return jax.jit(correct)
  return program("clean", apply_fn, (), build)


def _classify(fn: Callable, variables: Any, images, labels, batch_size: int,
              mesh: jax.sharding.Mesh) -> np.ndarray:
  """Runs a clean program `fn(variables, b, float images, labels) -> bool
  [M, B]` over the examples: bool [M, n]."""
  variables = parallel.replicate(mesh, variables)
  if np.dtype(images.dtype) == np.uint8:
    # uint8 batches are converted by one model-free program, so a model's
    # clean program is the same for uint8 images (clean, domain cells) and
    # float ones (attacked, corrupted): one compile per model, not two. The
    # conversion is the very division the fused program did.
    to_float = program("to_float", None, (), lambda: jax.jit(
        pipeline.to_float))
    run = lambda b, x, y: fn(variables, b, to_float(x), y)
  else:
    run = lambda b, x, y: fn(variables, b, x, y)
  return run_batches(run, (images, labels), global_batch(batch_size, mesh),
                     mesh)


def clean_correct(apply_fn: Callable, variables: Any, images, labels,
                  batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """Whether each example is classified correctly: bool [n].

  Args:
    apply_fn: `logits = apply_fn(variables, images_in_0_1)`.
    variables: the model's variables.
    images: uint8 [0, 255] or float [0, 1] images [n, H, W, C].
    labels: int [n].
    batch_size: global batch, rounded up to the device count.
    mesh: the device mesh.

  Returns:
    bool numpy array [n].
  """
  return _classify(_clean_program(apply_fn), variables, images, labels,
                   batch_size, mesh)[0]


def _clean_program_many(apply_fn: Callable) -> Callable:
  def build():
    def correct(variables, b, images, labels):
      del b
      logits = jax.vmap(apply_fn, in_axes=(0, None))(
          variables, pipeline.to_float(images))
      return jnp.argmax(logits, -1) == labels
    return jax.jit(correct)
  return program("clean_many", apply_fn, (), build)


def clean_correct_many(apply_fn: Callable, variables: Sequence[Any], images,
                       labels, batch_size: int,
                       mesh: jax.sharding.Mesh) -> np.ndarray:
  """`clean_correct` of K models sharing `apply_fn`: bool [K, n].

  One program classifies each batch with the K stacked models (vmapped over
  their variables, `batched.stack`), so the batch is sent and converted
  once. One model runs `clean_correct`'s own program.
  """
  if len(variables) == 1:
    return clean_correct(apply_fn, variables[0], images, labels, batch_size,
                         mesh)[None]
  return _classify(_clean_program_many(apply_fn), batched.stack(variables),
                   images, labels, batch_size, mesh)


def clean_correct_levels(apply_fn: Callable, variables: Any, images, labels,
                         batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """`clean_correct` of every level's images in one pass: bool [L, n].

  The L levels' images (e.g. the severities of one corruption) go through
  one batch loop as L * n examples, so a cell whose n is below the batch
  size is not padded once per level.

  Args:
    apply_fn, variables, batch_size, mesh: as `clean_correct`.
    images: [L, n, H, W, C], one set of images per level.
    labels: int [n], the same for every level.
  """
  return clean_correct_levels_many(apply_fn, [variables], images, labels,
                                   batch_size, mesh)[0]


def clean_correct_levels_many(apply_fn: Callable, variables: Sequence[Any],
                              images, labels, batch_size: int,
                              mesh: jax.sharding.Mesh) -> np.ndarray:
  """`clean_correct_levels` of K models sharing `apply_fn`: bool [K, L, n]."""
  images = _host(images)  # Global arrays of several processes: gathered.
  levels, n = images.shape[:2]
  flat = clean_correct_many(apply_fn, variables,
                            images.reshape((levels * n,) + images.shape[2:]),
                            np.tile(_host(labels), levels), batch_size, mesh)
  return flat.reshape(len(variables), levels, n)


# ----------------------------------------------------------------------------
# Helpers of the evaluator types.


def take(split, n: int):
  """The first `n` examples of `split` (all of them for n = -1 or n >= N)."""
  if n < 0 or n >= len(split):
    return split
  return dataclasses.replace(split, images=split.images[:n],
                             labels=split.labels[:n])


def cell_seed(seed: int, cell_key: str) -> jax.Array:
  """The cell's PRNG key: a function of (seed, cell key) only."""
  return jax.random.fold_in(jax.random.PRNGKey(seed),
                            zlib.crc32(cell_key.encode()) & 0x7FFFFFFF)


def need_split(split, what: str):
  if split is None or len(split) == 0:
    raise ValueError(f"{what} needs a non-empty split; got "
                     f"{'None' if split is None else 'an empty one'}.")


def named_block(evals, block: str, test):
  """A sub-block with `names` and `max_examples`, and the examples it reads.

  Args:
    evals: the `evals` block.
    block: the sub-block's name, e.g. 'corruptions' or 'attacks'.
    test: the source-domain test split.

  Returns:
    `(evals.<block>, split)`: the split is the first `max_examples` examples
    of `test`, or None when the sub-block names nothing (then `test` may be
    None too).
  """
  sub = checks.field(evals, block)
  if not sub["names"]:
    return sub, None
  need_split(test, f"evals.{block}")
  return sub, take(test, sub["max_examples"])
