"""Common corruptions x severities (`evals.corruptions`).

One cell per corruption name, over all its severities: the severity is a
traced value, so one compiled program covers every level (`lax.map` over
severities on CPU, `vmap` elsewhere; `evals.level_map`). Batch b of the
split is corrupted with the key `fold_in(cell_key, b)` (then the severity),
where the cell key depends only on (seed, 'corruption/<name>'): every model
sees the same corrupted images.

Corrupted splits are computed once and kept in a cache of at most
`CORRUPTED_CACHE_BYTES` shared by every model of the process (a study then
pays each corruption once and each model only forward passes). A split
bigger than the cache, and one that was evicted once (the study's cells do
not all fit, so the ones cached stay), is corrupted batch by batch inside
the model's program on the device instead, with identical images.
"""

import collections
import dataclasses
import functools
import zlib
from typing import Any, Callable, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data.registry import Split
from robustjax.models import batched
from robustjax.robustness import corruptions
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks

CORRUPTED_CACHE_BYTES = 1 << 30
_CORRUPTED = collections.OrderedDict()
# Keys evicted once: asked for again, the cells' working set is larger than
# the cache (every model walks the same cells in the same order, which an
# LRU cache would miss every time), so they run fused and the cached ones
# stay.
_EVICTED = set()
MAX_EVICTED_KEYS = 4096
LEVEL_MAPS = ("auto", "map", "vmap")


def _use_map(level_map: str) -> bool:
  """`lax.map` over levels ('auto': on the CPU backend) instead of vmap."""
  if level_map == "auto":
    return jax.default_backend() == "cpu"
  return level_map == "map"


def _corrupt_fn(name: str, table: str, use_map: bool) -> Callable:
  """(images, key, severities) -> float32 [S, B, H, W, C] (not jitted)."""
  corruption = corruptions.get_corruption(name, table)

  def corrupt(images, key, severities):
    x = pipeline.to_float(images)
    one = lambda s: corruption.apply(x, s, jax.random.fold_in(key, s))
    if use_map:
      return jax.lax.map(one, severities)
    return jax.vmap(one)(severities)
  return corrupt


def corrupted_images(images, name: str, severities, key: jax.Array,
                     table: str, batch_size: int, level_map: str,
                     mesh: jax.sharding.Mesh) -> np.ndarray:
  """Corrupted `images` at every severity: float32 [S, N, H, W, C].

  Args:
    images: uint8 or float [N, H, W, C].
    name: corruption name.
    severities: levels 1..5.
    key: the cell's key; batch b uses `fold_in(key, b)`.
    table: severity table, 'cifar' or 'imagenet'.
    batch_size: global batch (rounded up to the device count); the noise of
      an image depends on its batch, so it must match the model pass.
    level_map: 'auto', 'map' or 'vmap' over severities.
    mesh: device mesh.

  Returns:
    numpy float32 [len(severities), N, H, W, C].
  """
  use_map = _use_map(level_map)

  def build():
    corrupt = _corrupt_fn(name, table, use_map)
    return jax.jit(lambda args, b, x: corrupt(
        x, jax.random.fold_in(args[0], b), args[1]))
  fn = base.program("corrupt", None, (name, table, use_map), build)
  args = parallel.replicate(mesh, (key, jnp.asarray(severities, jnp.int32)))
  return base.run_batches(lambda b, x: fn(args, b, x), (images,),
                          base.global_batch(batch_size, mesh), mesh)


def _fused_program(apply_fn: Callable, name: str, table: str,
                   use_map: bool, many: bool = False) -> Callable:
  """(variables, key, severities), b, images, labels -> bool [S, B]; with
  `many`, stacked variables of K models -> bool [K, S, B] (one corruption
  of the batch for all K)."""
  def build():
    corrupt = _corrupt_fn(name, table, use_map)

    def correct(args, b, images, labels):
      variables, key, severities = args
      xc = corrupt(images, jax.random.fold_in(key, b), severities)
      one = lambda v: jax.vmap(lambda x: jnp.argmax(apply_fn(v, x), -1) ==
                               labels)(xc)
      return jax.vmap(one)(variables) if many else one(variables)
    return jax.jit(correct)
  return base.program("corruption", apply_fn, (name, table, use_map, many),
                      build)


@dataclasses.dataclass(frozen=True, eq=False)
class CorruptionCell(base.Cell):
  """Correctness under corruption `name` at every severity in `levels`.

  Attributes:
    split: the first `evals.corruptions.max_examples` source-test examples.
    table: severity table, 'cifar' or 'imagenet'.
    rng: the cell's PRNG key (from the seed and the cell key).
    batch_size: global evaluation batch.
    level_map: 'auto', 'map' or 'vmap' over severities.
  """
  split: Split = dataclasses.field(repr=False)
  table: str
  rng: jax.Array = dataclasses.field(repr=False)
  batch_size: int
  level_map: str

  FIELDS = {"corruptions": ("names", "severities", "table", "max_examples"),
            "batch_size": None, "level_map": None}

  @classmethod
  def check(cls, evals):
    """Raises ValueError (one sentence) for a bad field of `evals`."""
    checks.check_names(evals, "corruptions.names", corruptions.ALL,
                       "corruption", presets=corruptions.PRESETS)
    severities = checks.sequence(evals, "corruptions.severities", "(1, 3, 5)")
    valid = range(1, corruptions.NUM_SEVERITIES + 1)
    if not all(checks.is_int(s) and s in valid for s in severities) or (
        checks.field(evals, "corruptions.names") and not severities):
      raise ValueError(f"evals.corruptions.severities={severities!r} must "
                       f"hold severities in 1..{corruptions.NUM_SEVERITIES}.")
    checks.check_choice(evals, "corruptions.table", corruptions.TABLES)
    checks.check_max_examples(evals, "corruptions.max_examples")
    checks.check_positive_int(evals, "batch_size")
    checks.check_choice(evals, "level_map", LEVEL_MAPS)

  @classmethod
  def cells(cls, evals, test: Split, targets: Dict[str, Split],
            seed: int, data=None) -> List[base.Cell]:
    """One cell per corruption `evals.corruptions.names` lists (a preset
    such as "benchmark" gives one per corruption of its set)."""
    del targets, data
    c, split = base.named_block(evals, "corruptions", test)
    severities = tuple(int(s) for s in c["severities"])
    return [cls("corruption", name, severities, len(split), split,
                c["table"], base.cell_seed(seed, f"corruption/{name}"),
                checks.field(evals, "batch_size"),
                checks.field(evals, "level_map"))
            for name in checks.expand(c["names"], corruptions.PRESETS)]

  def program_examples(self) -> int:
    """Every severity of a batch (the fused program holds them at once)."""
    return self.batch_size * len(self.levels)

  @functools.cached_property
  def _fingerprint(self) -> tuple:
    """The split's content (splits of different datasets share names)."""
    images = np.ascontiguousarray(self.split.images)
    return images.shape, str(images.dtype), zlib.crc32(images.data)

  def _source(self, mesh: jax.sharding.Mesh):
    """(batch size, cached corrupted split or None to run fused)."""
    images = self.split.images
    batch_size = base.global_batch(self.batch_size, mesh)
    nbytes = len(self.levels) * images[0].size * len(images) * 4
    cache_key = (self._fingerprint, self.name, self.levels, self.table,
                 tuple(np.asarray(jax.random.key_data(self.rng)).ravel()),
                 batch_size, _use_map(self.level_map))
    if nbytes > CORRUPTED_CACHE_BYTES or (cache_key not in _CORRUPTED and
                                          cache_key in _EVICTED):
      return batch_size, None  # Corrupted batch by batch on the device.
    if cache_key not in _CORRUPTED:
      _CORRUPTED[cache_key] = corrupted_images(
          images, self.name, self.levels, self.rng, self.table, batch_size,
          self.level_map, mesh)
      while (sum(v.nbytes for v in _CORRUPTED.values()) >
             CORRUPTED_CACHE_BYTES and len(_CORRUPTED) > 1):
        if len(_EVICTED) >= MAX_EVICTED_KEYS:
          _EVICTED.clear()
        _EVICTED.add(_CORRUPTED.popitem(last=False)[0])
    _CORRUPTED.move_to_end(cache_key)
    return batch_size, _CORRUPTED[cache_key]

  def _fused(self, apply_fn, variables, batch_size, mesh, many: bool):
    fn = _fused_program(apply_fn, self.name, self.table,
                        _use_map(self.level_map), many)
    args = parallel.replicate(mesh, (
        batched.stack(variables) if many else variables, self.rng,
        jnp.asarray(self.levels, jnp.int32)))
    return base.run_batches(lambda b, x, y: fn(args, b, x, y),
                            (self.split.images, self.split.labels),
                            batch_size, mesh, axis=2 if many else 1)

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [num_severities, n]: example i correct at each severity."""
    batch_size, shifted = self._source(mesh)
    if shifted is None:
      return self._fused(apply_fn, variables, batch_size, mesh, False)
    return base.clean_correct_levels(apply_fn, variables, shifted,
                                     self.split.labels, batch_size, mesh)

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [K, num_severities, n]: the K models on the same corrupted
    images (corrupted once, classified by one vmapped program)."""
    batch_size, shifted = self._source(mesh)
    if shifted is None:
      return self._fused(apply_fn, variables, batch_size, mesh, True)
    return base.clean_correct_levels_many(apply_fn, variables, shifted,
                                          self.split.labels, batch_size, mesh)
