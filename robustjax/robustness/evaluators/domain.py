"""Domain shift: accuracy on every loaded target domain (`evals.domain`)."""

import dataclasses
from typing import Dict, List

from robustjax.data.registry import Split
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks
from robustjax.robustness.evaluators import clean


@dataclasses.dataclass(frozen=True, eq=False)
class DomainCell(clean.CleanCell):
  """Correctness on a whole target-domain split (level `None`).

  Its fields are checked as `CleanCell`'s, with the flag `evals.domain`.
  """

  FLAG = "domain"
  FIELDS = {"domain": None, "batch_size": None}

  @classmethod
  def cells(cls, evals, test: Split, targets: Dict[str, Split],
            seed: int, data=None) -> List[base.Cell]:
    """One cell per target domain, in the order of `targets`."""
    del test, seed, data
    if not checks.field(evals, cls.FLAG):
      return []
    cells = []
    for name, split in (targets or {}).items():
      if len(split) == 0:
        raise ValueError(f"Target domain {name!r} has no examples; drop it "
                         "from the targets or set evals.domain=False.")
      cells.append(cls("domain", name, (None,), len(split), split,
                       checks.field(evals, "batch_size")))
    return cells
