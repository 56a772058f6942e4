"""Clean accuracy: the source-domain test split as it is (`evals.clean`)."""

import dataclasses
from typing import Any, Callable, Dict, List, Sequence

import jax
import numpy as np

from robustjax.data.registry import Split
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks


@dataclasses.dataclass(frozen=True, eq=False)
class CleanCell(base.Cell):
  """Correctness on one unmodified split, at the single level `None`.

  Attributes:
    split: the split evaluated (all of it).
    batch_size: global evaluation batch (rounded up to the device count).
  """
  split: Split = dataclasses.field(repr=False)
  batch_size: int

  # The boolean field of the evals block that switches the evaluator on.
  FLAG = "clean"
  # Fields of the evals block this evaluator reads (sub-block: its fields).
  FIELDS = {"clean": None, "batch_size": None}

  @classmethod
  def check(cls, evals):
    """Raises ValueError (one sentence) for a bad field of `evals`."""
    checks.check_bool(evals, cls.FLAG)
    checks.check_positive_int(evals, "batch_size")

  @classmethod
  def cells(cls, evals, test: Split, targets: Dict[str, Split],
            seed: int, data=None) -> List[base.Cell]:
    """The cell of `evals.clean` (none if it is False)."""
    del targets, seed, data
    if not checks.field(evals, cls.FLAG):
      return []
    base.need_split(test, "evals.clean")
    return [cls("clean", "source", (None,), len(test), test,
                checks.field(evals, "batch_size"))]

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [1, n]: example i of the split classified correctly."""
    return base.clean_correct(apply_fn, variables, self.split.images,
                              self.split.labels, self.batch_size, mesh)[None]

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [K, 1, n]: the K models on the split, one program per batch."""
    return base.clean_correct_many(apply_fn, variables, self.split.images,
                                   self.split.labels, self.batch_size,
                                   mesh)[:, None]
