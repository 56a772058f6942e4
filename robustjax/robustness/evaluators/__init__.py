"""Evaluators: one registry, built from the `evals` config block.

  cells = evaluators.build(config.evals, test, targets, seed)   # no model
  results = evaluators.evaluate(apply_fn, variables, cells)     # per model

The block (declared in the base config) reads:

  evals.clean, evals.domain              # source test split, every target
  evals.batch_size                       # examples per compiled batch
  evals.corruptions.{names, severities, table, max_examples}
  evals.attacks.{names, eps, steps, restarts, max_examples, chunk_size}
  evals.datasets.{name, domains, split, max_examples, as_corruption}
  evals.level_map                        # auto | map | vmap over severities
  evals.half_precision                   # bfloat16 float models (study)

Each evaluator type (`EVALUATORS`, keyed by the shift it measures; "dataset"
reads another dataset's files as domain or corruption shifts) checks its
fields and turns them into `Cell`s; a cell's `run(apply_fn, variables)`
returns rows `{"shift", "name", "level", "accuracy", "n"}` and the
per-example correctness behind them. The same cells serve training
(`accuracy`), eval-only runs and the study; programs are compiled once per
architecture and cell type (see `base`).
"""

from typing import Any, Callable, Dict, List, Optional

import jax

from robustjax import parallel
from robustjax.data.registry import Split
from robustjax.robustness.evaluators import attack
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import checks
from robustjax.robustness.evaluators import clean
from robustjax.robustness.evaluators import corruption
from robustjax.robustness.evaluators import dataset
from robustjax.robustness.evaluators import domain

Cell = base.Cell
CellResult = base.CellResult

EVALUATORS = {
    "clean": clean.CleanCell,
    "domain": domain.DomainCell,
    "corruption": corruption.CorruptionCell,
    "dataset": dataset.DatasetCell,
    "adversarial": attack.AttackCell,
}


# Fields of the block that the callers of the cells read (not a cell).
CALLER_FIELDS = {"half_precision": None}


def _check_known_fields(evals):
  """Rejects fields of `evals` (and its sub-blocks) no evaluator reads."""
  known = dict(CALLER_FIELDS)
  for cls in EVALUATORS.values():
    known.update(cls.FIELDS)
  for name in evals.keys():
    if name not in known:
      raise ValueError(f"evals.{name} is not a field of the evals block; "
                       f"valid fields: {', '.join(sorted(known))}.")
  for name, sub in known.items():
    if sub is None or (name == dataset.BLOCK and name not in evals):
      continue  # An evals block without `datasets` predates it: none.
    for f in checks.field(evals, name).keys():
      if f not in sub:
        raise ValueError(f"evals.{name}.{f} is not a field of "
                         f"evals.{name}; valid fields: {', '.join(sub)}.")


def check_evals(evals):
  """Checks every field of an `evals` block before any work.

  Args:
    evals: the block (ConfigDict or dict).

  Raises:
    ValueError: one sentence naming the field, its value and what is valid:
      unknown fields, names, tables or level maps; a string where a tuple
      belongs; negative or non-finite eps; severities outside 1..5;
      max_examples of 0 or below -1; non-positive batch_size, chunk_size,
      steps or restarts.
  """
  _check_known_fields(evals)
  if "half_precision" in evals:
    checks.check_bool(evals, "half_precision")
  for cls in EVALUATORS.values():
    cls.check(evals)


def build(evals, test: Optional[Split], targets: Dict[str, Split],
          seed: int = 0, data=None) -> List[Cell]:
  """The cells of every evaluator of `evals`, without a model.

  Args:
    evals: the `evals` block; checked first (`check_evals`).
    test: the source-domain test split (clean, corruptions, attacks).
    targets: target-domain name -> split (domain shift).
    seed: randomness of corruptions and attack starts; with the cell key it
      fixes every model's inputs.
    data: the study's `dataset` config block (name, image_size, data_dir,
      manual_dir); needed only when `evals.datasets.name` is set (its splits
      are loaded at the study's size from the same folders).

  Returns:
    Cells in registry order (clean, domain, corruption, dataset,
    adversarial), each with a unique `key`.
  """
  check_evals(evals)
  cells = []
  for cls in EVALUATORS.values():
    cells.extend(cls.cells(evals, test, targets, seed, data=data))
  return cells


def evaluate(apply_fn: Callable, variables: Any, cells: List[Cell],
             mesh: Optional[jax.sharding.Mesh] = None) -> List[CellResult]:
  """Runs every cell on one model.

  Args:
    apply_fn: `logits = apply_fn(variables, images_in_0_1)`, inference mode.
    variables: the model's variables.
    cells: from `build`.
    mesh: device mesh (default: every device).

  Returns:
    One `CellResult` per cell, in order.
  """
  mesh = mesh or parallel.make_mesh()
  return [cell.run(apply_fn, variables, mesh) for cell in cells]


def accuracy(apply_fn: Callable, variables: Any, split: Split,
             batch_size: int,
             mesh: Optional[jax.sharding.Mesh] = None) -> float:
  """Top-1 accuracy of a model on a whole split (training's evaluation).

  Args:
    apply_fn: `logits = apply_fn(variables, images_in_0_1)`, inference mode.
    variables: the model's variables.
    split: a loaded split (uint8 images).
    batch_size: global evaluation batch (rounded up to the device count).
    mesh: device mesh (default: every device).

  Returns:
    Fraction of correctly classified examples, in [0, 1].
  """
  base.need_split(split, "accuracy")
  return float(base.clean_correct(apply_fn, variables, split.images,
                                  split.labels, batch_size,
                                  mesh or parallel.make_mesh()).mean())
