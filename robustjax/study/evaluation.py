"""Evaluates a study's models on their cells and records every result.

The runner (robustjax.study.runner) hands this module its models in batches:
one model at a time, or, with `config.study.grouped` on, the models of one
seed that share a program (`grouped.evaluation_groups`: one architecture's
float original, replicate, pruned and distilled models). A batch walks the
cells its models still lack in the cells' order; each cell runs once for
every model of the batch that needs it (`Cell.run_many`: one program
vmapped over the stacked models on the same clean, corrupted or transfer
images, and each model attacked from the same starts), and each model's
result is recorded on its own, as its single run would be. A batch of one
model is exactly the sequential study.

Transfer cells are built once per source (a float original and seed), so
the models attacked from one source share the cell and run together; a
float original's white-box images are kept while its batch runs
(`transfer.keep_source_images`), so it is attacked once.
"""

import contextlib
import dataclasses
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from robustjax import preemption
from robustjax.compress import recipes
from robustjax.robustness.evaluators import base as evaluators_base
from robustjax.robustness.evaluators import transfer
from robustjax.study import grid as grid_lib
from robustjax.study import journal as journal_lib

ROW_FIELDS = ("model_id", "seed", "arch", "method", "setting", "size_bits",
              "sparsity", "shift", "name", "level", "accuracy", "n")


def record_key(model_id: str, seed: int, cell_key: str) -> str:
  return f"{model_id}|s{seed}|{cell_key}"


def validate_row(row: dict) -> None:
  """Raises ValueError if `row` does not follow the results schema."""
  missing = [k for k in ROW_FIELDS if k not in row]
  if missing:
    raise ValueError(f"Result row misses {missing}: {row}")
  if row["method"] not in recipes.METHODS:
    raise ValueError(f"Bad method {row['method']!r}")
  if row["shift"] not in evaluators_base.SHIFTS:
    raise ValueError(f"Bad shift {row['shift']!r}")
  if not 0.0 <= row["accuracy"] <= 1.0 or row["n"] <= 0:
    raise ValueError(f"Bad accuracy/n in {row}")
  if not isinstance(row["setting"], dict):
    raise ValueError(f"setting must be an object: {row}")


def record_cell(journal: journal_lib.Journal, key: str,
                result: evaluators_base.CellResult, header: dict
                ) -> List[dict]:
  """Records one model's result of one cell (rows + per-example bits)."""
  rows = [{**header, **r} for r in result.rows]
  if "model_id" in header:
    for r in rows:
      validate_row(r)
  correct = np.asarray(result.correct, bool)
  with preemption.deferred():  # A record is written whole.
    journal.add(key, {"rows": rows}, arrays={
        "correct": np.packbits(correct, axis=-1),
        "shape": np.asarray(correct.shape)})
  return rows


def run_cell(journal: journal_lib.Journal, key: str, cell, model,
             header: dict) -> List[dict]:
  """Runs one evaluation cell on one model and records it."""
  return record_cell(journal, key, cell.run(model.apply_fn, model.variables),
                     header)


def transfer_keys(config, shifts) -> List[str]:
  """Cells of the transfer attacks every compressed model gets."""
  a = config.evals.attacks
  if not a.transfer or "adversarial" not in shifts:
    return []
  return [f"adversarial/{transfer.transfer_name(n)}" for n in a.names]


def source_key(spec, seed: int) -> str:
  """Names a transfer source: its model id and seed."""
  return f"{spec.model_id}|s{seed}"


def header(spec: grid_lib.ModelSpec, seed: int, meta: dict) -> dict:
  """The fields every result row of a model starts with."""
  return {"model_id": spec.model_id, "seed": seed, "arch": spec.arch,
          "method": spec.method, "setting": spec.settings,
          "original_id": spec.original_id, "size_bits": meta["size_bits"],
          "sparsity": meta["sparsity"],
          # Conv/dense kernel entries (zeros included).
          "weights": meta["size"]["weights"]}


@dataclasses.dataclass
class ModelCells:
  """A model of a batch and the cells it still lacks, in order."""
  spec: grid_lib.ModelSpec
  seed: int
  model: Any  # saved.Compressed, as evaluated.
  cells: Dict[str, evaluators_base.Cell]


class Evaluator:
  """Evaluates batches of one seed's models and records their cells.

  Args:
    journal: the study's journal.
    seed_cells: the seed's cells (`evaluators.build`), in order.
    models: the study's `builder.Models`.
    config: the study config.
    times: a `timing.Stages` (evaluation time by shift).
    bar: a `progress.Progress` over cells.
    doing: hears what is under way (a preemption's message).
    with_transfer: whether compressed models get transfer cells.
  """

  def __init__(self, journal, seed_cells, models, config, times, bar,
               doing: Callable[[str], None], with_transfer: bool):
    self.journal, self.seed_cells, self.models = journal, seed_cells, models
    self.config, self.times, self.bar = config, times, bar
    self.doing, self.with_transfer = doing, with_transfer
    self._transfer = {}  # Source key -> its transfer cells.

  def model_cells(self, spec, seed: int, model,
                  pending: Sequence[str]) -> ModelCells:
    """`model` with the cells of `pending` keys (transfer cells bound to
    its float original as the source)."""
    cells = [c for c in self.seed_cells if c.key in pending]
    if any(k.startswith("adversarial/transfer_") for k in pending):
      cells += [c for c in self._transfer_cells(spec, seed)
                if c.key in pending]
    return ModelCells(spec, seed, model, {c.key: c for c in cells})

  def _transfer_cells(self, spec, seed):
    source_spec = self.models.by_id[spec.original_id]
    key = source_key(source_spec, seed)
    if key not in self._transfer:
      source = self.models.for_evaluation(self.models.get(source_spec, seed))
      self._transfer[key] = transfer.cells(
          [c for c in self.seed_cells if c.shift == "adversarial"], key,
          source.apply_fn, source.variables, self.config.evals.batch_size)
    return self._transfer[key]

  def run(self, members: Sequence[ModelCells]) -> None:
    """Runs every pending cell of `members` (models sharing `apply_fn`
    when there are several) and records each model's result."""
    with contextlib.ExitStack() as stack:
      for m in members:
        # A float original's white-box images are its compressed models'
        # transfer attacks: kept, so the original is attacked once.
        if self.with_transfer and m.spec.method == "original":
          stack.enter_context(transfer.keep_source_images(
              source_key(m.spec, m.seed), m.model.apply_fn,
              m.model.variables))
      keys = list(dict.fromkeys(k for m in members for k in m.cells))
      for key in keys:
        who = [m for m in members if key in m.cells]
        for cell in dict.fromkeys(m.cells[key] for m in who):
          self._run_cell(cell, [m for m in who if m.cells[key] is cell])

  def _run_cell(self, cell, members: Sequence[ModelCells]) -> None:
    preemption.check()
    names = ", ".join(f"{m.spec.model_id} (seed {m.seed})" for m in members)
    self.doing(f"evaluating {names} on {cell.key}")
    apply_fn = members[0].model.apply_fn
    with self.times.stage(f"evaluate/{cell.shift}"):
      results = cell.run_many(apply_fn, [m.model.variables for m in members])
    for m, result in zip(members, results):
      rows = record_cell(self.journal, record_key(m.spec.model_id, m.seed,
                                                  cell.key), result,
                         header(m.spec, m.seed, m.model.metadata))
      self.bar.update(1)
      self.bar.write(f"{m.spec.model_id} s{m.seed} {cell.key}: " + ", ".join(
          f"{100 * r['accuracy']:.1f}%" for r in rows))
