"""Shifts read from another dataset's files (`evals.datasets`).

  evals.datasets.name = "cifar10_corrupted"   # a registered dataset; "" = none
  evals.datasets.domains = ()                 # its domains; () = all of them
  evals.datasets.split = "test"               # the split read of each domain
  evals.datasets.max_examples = -1            # first N of each domain; -1 = all
  evals.datasets.as_corruption = True         # rows as corruption levels

Every domain is loaded with `robustjax.data.registry.load_split` at the
study's image size, data dir and manual dir (`build(..., data=config.dataset)`),
so a missing or unprepared dataset fails while the cells are built, with the
registry's message (what is missing and the command that prepares it).

Rows and names (`<dataset>/<...>` keeps them apart from the study's own
target domains and generated corruptions, in the journal, the report and the
claims, while their shift type puts them in the same analyses):

* `as_corruption=False`: one cell per domain, shift "domain", name
  "<dataset>/<domain>", level None.
* `as_corruption=True` (datasets whose domains are corruption levels, i.e.
  whose `DatasetSpec.corruption` maps a domain to (corruption, severity):
  CIFAR-10-C): one cell per corruption, shift "corruption", name
  "<dataset>/<corruption>" with the suite's corruption name (e.g.
  "cifar10_corrupted/glass_blur" for tfds' `frosted_glass_blur_<s>`), levels =
  the severities of the selected domains, ascending. Such a row sits beside
  the generated corruption's row "glass_blur" at the same levels. Every level
  of a cell evaluates the first n examples of its domain, n the smallest
  domain size of the cell (CIFAR-10-C: all domains hold the same 10,000
  test images, so nothing is dropped).

The report's severity table gives each source its own mean ("mean" and
"mean (<dataset>)"); its plots and the claims' corruption analysis pool the
generated and the released corruptions (per model, the mean over every
corruption cell).

Example i of a released-file cell is the i-th record of its tfds split: every
model sees the same images (the claims pair models example by example), but
it need not be the same picture as example i of the source test split (tfds
stores each dataset in its own order), unlike the generated corruptions.

All cells run the clean-correctness program (`base.clean_correct`), compiled
once per architecture and shared with the clean and domain cells. Loaded
splits are kept in this process up to `MAX_CACHED_BYTES` (`clear_cache`),
so the cells of several seeds and models share one copy; once that is full,
further splits are read from their files each time a cell runs and dropped
after it (CIFAR-10-C's 95 domains hold ~2.9 GB at 32 px, so a study does not
hold them all).
"""

import collections
import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from robustjax.data import registry
from robustjax.data.registry import Split
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks

BLOCK = "datasets"
FIELDS = ("name", "domains", "split", "max_examples", "as_corruption")
MAX_CACHED_BYTES = 1 << 30
_SPLITS = {}
_LENGTHS = {}  # Of every split loaded, kept or not (building cells needs it).


def clear_cache():
  """Forgets the loaded splits (e.g. after reading mocked data in a test)."""
  _SPLITS.clear()
  _LENGTHS.clear()


def _block(evals) -> Optional[dict]:
  """The `evals.datasets` block as a dict, or None when the block is absent
  (an evals block written before it existed means: no dataset shift)."""
  if BLOCK not in evals:
    return None
  return {f: checks.field(evals, f"{BLOCK}.{f}") for f in FIELDS}


def _key(name: str, domain: str, split: str, data, max_examples: int):
  return (name, domain, split, int(data["image_size"]),
          data["data_dir"] or None, data["manual_dir"] or None, max_examples)


def _length(name: str, domain: str, split: str, data,
            max_examples: int) -> int:
  """A split's length, read once per process (the split itself may not be
  kept: `_load`)."""
  key = _key(name, domain, split, data, max_examples)
  if key not in _LENGTHS:
    _load(name, domain, split, data, max_examples)
  return _LENGTHS[key]


def _load(name: str, domain: str, split: str, data,
          max_examples: int) -> Split:
  key = _key(name, domain, split, data, max_examples)
  if key in _SPLITS:
    return _SPLITS[key]
  loaded = registry.load_split(
      name, domain, split, int(data["image_size"]),
      data_dir=data["data_dir"] or None, manual_dir=data["manual_dir"] or None,
      max_examples=None if max_examples < 0 else max_examples,
      allow_partial=bool(data.get("allow_partial", False)), cache=False)
  _LENGTHS[key] = len(loaded)
  # Kept while there is room; the first ones stay (every model reads the
  # cells in the same order, which an LRU cache would miss every time).
  if _nbytes(loaded) + sum(map(_nbytes, _SPLITS.values())) <= MAX_CACHED_BYTES:
    _SPLITS[key] = loaded
  return loaded


def _nbytes(split: Split) -> int:
  return split.images.nbytes + (0 if split.uncropped is None
                                else split.uncropped.nbytes)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetCell(base.Cell):
  """Correctness on another dataset's splits, one split per level.

  Attributes:
    loads: per level, a function returning its split (all at least `n`
      examples long; kept in memory or read again, `MAX_CACHED_BYTES`).
    batch_size: global evaluation batch (rounded up to the device count).
  """
  loads: Tuple[Callable[[], Split], ...] = dataclasses.field(repr=False)
  batch_size: int

  @property
  def splits(self) -> Tuple[Split, ...]:
    """The levels' splits (read from their files unless kept in memory)."""
    return tuple(load() for load in self.loads)

  FIELDS = {BLOCK: FIELDS, "batch_size": None}

  @classmethod
  def check(cls, evals):
    """Raises ValueError (one sentence) for a bad field of `evals`."""
    d = _block(evals)
    if d is None:
      return
    name = d["name"]
    if not isinstance(name, str) or (name and name not in registry.DATASETS):
      raise ValueError(f"evals.{BLOCK}.name={name!r} is not a registered "
                       f"dataset; use \"\" (none) or one of "
                       f"{', '.join(sorted(registry.DATASETS))}.")
    domains = checks.sequence(evals, f"{BLOCK}.domains",
                              "('gaussian_noise_3', 'fog_5')")
    checks.check_bool(evals, f"{BLOCK}.as_corruption")
    checks.check_max_examples(evals, f"{BLOCK}.max_examples")
    if not isinstance(d["split"], str) or not d["split"]:
      raise ValueError(f"evals.{BLOCK}.split={d['split']!r} must name a "
                       "split, e.g. 'test'.")
    if not name:
      return
    spec = registry.get_spec(name)
    for domain in domains:
      if domain not in spec.domains:
        listed = ", ".join(spec.domains[:8]) + (
            f" (and {len(spec.domains) - 8} more)"
            if len(spec.domains) > 8 else "")
        raise ValueError(f"evals.{BLOCK}.domains names {domain!r}, which is "
                         f"not a domain of {name!r}; its domains are "
                         f"{listed}.")
      if domains.count(domain) > 1:
        raise ValueError(f"evals.{BLOCK}.domains lists {domain!r} twice.")
    for domain in domains or spec.domains:
      if d["split"] not in spec.splits(domain):
        raise ValueError(f"evals.{BLOCK}.split={d['split']!r}: domain "
                         f"{domain!r} of {name!r} has the splits "
                         f"{', '.join(spec.splits(domain))}.")
    if d["as_corruption"] and spec.corruption is None:
      raise ValueError(f"evals.{BLOCK}.as_corruption=True, but the domains "
                       f"of {name!r} are not corruption levels; set it to "
                       "False to evaluate them as domain shift.")

  @classmethod
  def cells(cls, evals, test: Split, targets: Dict[str, Split], seed: int,
            data=None) -> List[base.Cell]:
    """The cells of `evals.datasets` (none without a dataset name).

    Args:
      evals: the evals block.
      test, targets, seed: unused (the cells read their own splits and have
        no randomness).
      data: the study's `dataset` config block (name, image_size, data_dir,
        manual_dir).

    Returns:
      One cell per domain, or per corruption with `as_corruption`.

    Raises:
      ValueError: without `data`, or if the dataset's classes or channels
        differ from the study dataset's.
      FileNotFoundError: the dataset is not prepared (the registry's
        message).
    """
    del test, targets, seed
    d = _block(evals)
    if d is None or not d["name"]:
      return []
    name = d["name"]
    if data is None:
      raise ValueError(f"evals.{BLOCK}.name={name!r} needs the study's "
                       "dataset block (image size, data dir): call "
                       "evaluators.build(..., data=config.dataset).")
    spec, own = registry.get_spec(name), registry.get_spec(data["name"])
    if (spec.num_classes, spec.channels) != (own.num_classes, own.channels):
      raise ValueError(
          f"evals.{BLOCK}.name={name!r} has {spec.num_classes} classes and "
          f"{spec.channels} channels, but the models are trained on "
          f"{data['name']!r} ({own.num_classes} classes, {own.channels} "
          "channels); pick a dataset with the same labels.")
    domains = tuple(d["domains"]) or tuple(spec.domains)
    batch_size = checks.field(evals, "batch_size")

    def load(domain):
      return functools.partial(_load, name, domain, d["split"], data,
                               d["max_examples"])

    def length(domain):
      return _length(name, domain, d["split"], data, d["max_examples"])

    # Each split is read once per process here (its length, and a missing
    # dataset fails now), then kept or read again when a cell runs.
    if not d["as_corruption"]:
      return [cls("domain", f"{name}/{dm}", (None,), length(dm), (load(dm),),
                  batch_size) for dm in domains]
    by_corruption = collections.defaultdict(dict)
    for domain in domains:
      corruption, severity = spec.corruption(domain)
      by_corruption[corruption][severity] = domain
    cells = []
    for corruption, levels in by_corruption.items():
      severities = tuple(sorted(levels))
      loads = tuple(load(levels[s]) for s in severities)
      sizes = [length(levels[s]) for s in severities]
      n = min(sizes)
      if any(size != n for size in sizes):
        logging.warning("%s/%s: severities hold %s examples; every level "
                        "uses the first %d.", name, corruption, sizes, n)
      cells.append(cls("corruption", f"{name}/{corruption}", severities, n,
                       loads, batch_size))
    return cells

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [num_levels, n]: example i of each level's split correct."""
    return np.stack([base.clean_correct(
        apply_fn, variables, s.images[:self.n], s.labels[:self.n],
        self.batch_size, mesh) for s in map(lambda f: f(), self.loads)])

  @functools.cached_property
  def _example_shape(self) -> tuple:
    return tuple(self.loads[0]().images.shape[1:])

  def example_shape(self) -> tuple:
    """One example's shape (the first level's split, read once)."""
    return self._example_shape

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [K, num_levels, n]: the K models on each level's split."""
    return np.stack([base.clean_correct_many(
        apply_fn, variables, s.images[:self.n], s.labels[:self.n],
        self.batch_size, mesh) for s in map(lambda f: f(), self.loads)], 1)
