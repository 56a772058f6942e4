"""The resumable study runner: `run_study(config, workdir)`.

For every model of the grid (robustjax.study.grid) the runner builds the model
(trains the originals, compresses them), then evaluates it on every shift
cell (robustjax.robustness.evaluate) and appends that cell's rows to
`WORKDIR/results.jsonl` in one fsynced write. A cell whose rows are all
present is skipped, and so is building a model whose cells are all done;
built models are reused from `WORKDIR/models/<model_id>/`. Killing the run at
any moment and re-running the same command therefore finishes the grid
without redoing finished work: at worst the cell being written is redone (a
torn last line is dropped on restart).

At the end: `results.csv`, `report.md` and `plots/*.png`.
"""

import copy
import json
import os
import time
from typing import Dict, List, Tuple

from absl import logging
import jax
import ml_collections

from robustjax import io
from robustjax import models as models_lib
from robustjax import parallel
from robustjax.compress import methods
from robustjax.robustness import evaluate as evaluate_lib
from robustjax.study import grid as grid_lib
from robustjax.study import report as report_lib
from robustjax.train import trainer

RESULTS = "results.jsonl"
ROW_FIELDS = ("model_id", "arch", "method", "setting", "size_bits",
              "sparsity", "shift", "name", "level", "accuracy", "n")


def arch_config(config, arch: str) -> ml_collections.ConfigDict:
  """The training config of one architecture of the grid.

  The study's pruning settings reach robustjax.compress through a `compress`
  block (see robustjax.compress.methods.DEFAULTS).
  """
  c = copy.deepcopy(config)
  with c.unlocked():
    c.model.name, c.model.width = grid_lib.parse_arch(arch)
    c.compress = ml_collections.ConfigDict(dict(
        finetune_epochs=float(config.study.prune.finetune_epochs),
        finetune_learning_rate=float(config.study.prune.finetune_lr),
        act_bits=int(config.study.quantize.activation_bits)))
  return c


def _cell_keys(config, targets) -> Dict[str, int]:
  """Cell key -> number of rows it produces, for one model."""
  e = config.evals
  keys = {}
  if e.clean:
    keys["clean/source"] = 1
  if e.domain:
    keys.update({f"domain/{t}": 1 for t in targets})
  keys.update({f"corruption/{n}": len(e.corruptions.severities)
               for n in e.corruptions.names})
  keys.update({f"adversarial/{n}": len(e.attacks.eps)
               for n in e.attacks.names})
  return keys


def load_results(workdir: str) -> List[dict]:
  """Rows of a study, deduplicated (last write wins), torn lines dropped."""
  rows = io.read_jsonl(os.path.join(workdir, RESULTS))
  unique = {}
  for r in rows:
    unique[(r["model_id"], r["shift"], r["name"], r["level"])] = r
  return list(unique.values())


def validate_row(row: dict) -> None:
  """Raises ValueError if `row` does not follow the results schema."""
  missing = [k for k in ROW_FIELDS if k not in row]
  if missing:
    raise ValueError(f"Result row misses {missing}: {row}")
  if row["method"] not in ("original", "prune", "distill", "distill_control",
                           "quantize"):
    raise ValueError(f"Bad method {row['method']!r}")
  if row["shift"] not in ("clean", "domain", "corruption", "adversarial"):
    raise ValueError(f"Bad shift {row['shift']!r}")
  if not 0.0 <= row["accuracy"] <= 1.0 or row["n"] <= 0:
    raise ValueError(f"Bad accuracy/n in {row}")
  if not isinstance(row["setting"], dict):
    raise ValueError(f"setting must be an object: {row}")


class _Models:
  """Builds (or reloads) every model of the grid, once.

  Each model lives in `WORKDIR/models/<model_id>/` as saved by
  robustjax.compress.methods (`variables/` + `compression.json`, written
  last); training and fine-tuning runs resume from their checkpoints there.
  """

  def __init__(self, config, workdir):
    self.config = config
    self.root = os.path.join(workdir, "models")
    self._cache = {}
    self._data = None

  def _dir(self, spec):
    return os.path.join(self.root, spec.model_id.replace("/", "__"))

  def data(self):
    if self._data is None:
      self._data = trainer.load_data(self.config)
    return self._data

  def get(self, spec: grid_lib.ModelSpec, specs) -> Tuple:
    """Returns (apply_fn, variables, metadata) for `spec`."""
    if spec.model_id not in self._cache:
      folder = self._dir(spec)
      if methods.is_done(folder):
        result = methods.load_compressed(folder)
      else:
        result = self._build(spec, specs, folder)
      self._cache[spec.model_id] = result
    return self._cache[spec.model_id]

  def _build(self, spec, specs, folder):
    s, st = self.config.study, spec.settings
    cfg = arch_config(self.config, spec.arch)
    if spec.method == "original":
      state = trainer.train_and_evaluate(cfg, os.path.join(folder, "train"))
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      return methods.original(variables, cfg, folder, self.data())
    by_id = {x.model_id: x for x in specs}
    base_fn, base_vars, _ = self.get(by_id[spec.original_id], specs)
    if spec.method == "prune":
      return methods.prune_and_finetune(
          base_vars, cfg, st["sparsity"], st["scope"], folder,
          structure="channel" if st["structured"] else "unstructured",
          data=self.data(), name=spec.model_id)
    if spec.method == "quantize":
      return methods.quantize(
          base_vars, cfg, weight_bits=st["weight_bits"],
          act_bits=st["activation_bits"], workdir=folder, data=self.data(),
          name=spec.model_id)
    if spec.method in ("distill", "distill_control"):
      name, width = grid_lib.parse_arch(spec.arch)
      return methods.distill(
          base_fn, base_vars, cfg, folder, student=name, width=width,
          temperature=s.distill.temperature, alpha=st["alpha"],
          epochs=s.distill.epochs, data=self.data(), name=spec.model_id)
    raise ValueError(f"Unknown method {spec.method!r}")


class _Progress:
  """Cells done / total and an ETA from the pace of this run."""

  def __init__(self, total: int, finished: int):
    self.total, self.finished, self.t0, self.now = total, finished, \
        time.time(), 0

  def step(self, label: str, rows: List[dict]):
    self.finished += 1
    self.now += 1
    eta = (time.time() - self.t0) / self.now * (self.total - self.finished)
    logging.info("[%d/%d cells] %s: %s (ETA %.0f s)", self.finished,
                 self.total, label, ", ".join(
                     f"{r['level']}: {100 * r['accuracy']:.1f}%"
                     if r["level"] is not None else
                     f"{100 * r['accuracy']:.1f}%" for r in rows), eta)


def run_cells(cells, header: dict, path: str,
              progress: _Progress = None) -> List[dict]:
  """Runs cells, appending each cell's rows (+ `header`) to `path`."""
  out = []
  for cell in cells:
    rows = [{**header, **r} for r in cell.run()]
    if "model_id" in header:
      for r in rows:
        validate_row(r)
    if parallel.is_main_process():
      io.append_jsonl(path, rows)
    out.extend(rows)
    if progress is not None:
      progress.step(f"{header.get('model_id', '')} {cell.key}", rows)
  return out


def evaluate_workdir(config, workdir: str, output: str = "") -> List[dict]:
  """Evaluates a trained or compressed model on `config.evals`, resumably.

  Args:
    config: the model's config with an `evals` block.
    workdir: a training workdir (its newest checkpoint) or a compressed-model
      folder (`compression.json`, from launch/compress.py or a study).
    output: JSON-lines file for the rows (default
      `workdir/eval_results.jsonl`); cells already in it are skipped.

  Returns:
    All rows of `output`.
  """
  output = output or os.path.join(workdir, "eval_results.jsonl")
  if methods.is_done(workdir):
    apply_fn, variables, meta = methods.load_compressed(workdir)
    header = {"model": meta.get("name", ""), "method": meta.get("method"),
              "size_bits": meta.get("size_bits"),
              "sparsity": meta.get("sparsity")}
  else:
    variables = methods.restore_trained(workdir)
    apply_fn = models_lib.inference_fn(trainer.build_model(config))
    header = {"model": config.model.name, "method": "original"}
  _, evals_data = trainer.load_data(config)
  test = evals_data.pop("test")
  targets = {k.split("/", 1)[1]: v for k, v in evals_data.items()}
  done = {f"{r['shift']}/{r['name']}" for r in io.read_jsonl(output)}
  cells = [c for c in evaluate_lib.plan(apply_fn, variables, config.evals,
                                        test, targets, config.seed)
           if c.key not in done]
  logging.info("Evaluating %s: %d cells to run, %d already in %s.", workdir,
               len(cells), len(done), output)
  run_cells(cells, header, output, _Progress(len(cells), 0))
  return io.read_jsonl(output)


def run_study(config: ml_collections.ConfigDict, workdir: str) -> List[dict]:
  """Runs (or finishes) the study grid of `config` in `workdir`.

  Args:
    config: a study config (configs/default.py and friends): training fields,
      `study` (the grid) and `evals` (the shifts).
    workdir: output folder; re-running with the same workdir resumes.

  Returns:
    All result rows.
  """
  os.makedirs(workdir, exist_ok=True)
  main = parallel.is_main_process()
  if main:
    io.write_atomic(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2))
  rows = load_results(workdir)
  if main:  # Rewrite without torn lines / duplicates before appending.
    io.write_atomic(os.path.join(workdir, RESULTS), "".join(
        json.dumps(r, sort_keys=True) + "\n" for r in rows)
        if rows else "")
  specs = grid_lib.model_specs(config.study)
  _, evals_data = trainer.load_data(config)
  test = evals_data.pop("test")
  targets = {k.split("/", 1)[1]: v for k, v in evals_data.items()}
  cell_keys = _cell_keys(config, targets)
  done = {}
  for r in rows:
    key = (r["model_id"], f"{r['shift']}/{r['name']}")
    done[key] = done.get(key, 0) + 1
  is_done = lambda m, k: done.get((m, k), 0) >= cell_keys[k]
  total = len(specs) * len(cell_keys)
  finished = sum(is_done(s.model_id, k) for s in specs for k in cell_keys)
  logging.info("Study: %d models x %d cells = %d cells, %d already done.",
               len(specs), len(cell_keys), total, finished)
  models = _Models(config, workdir)
  progress = _Progress(total, finished)
  for spec in specs:
    todo = [k for k in cell_keys if not is_done(spec.model_id, k)]
    if not todo:
      continue
    apply_fn, variables, meta = models.get(spec, specs)
    header = {"model_id": spec.model_id,
              "arch": spec.arch, "method": spec.method,
              "setting": spec.settings, "original_id": spec.original_id,
              "size_bits": meta["size_bits"], "sparsity": meta["sparsity"],
              # Conv/dense kernel entries (zeros included).
              "weights": meta["size"]["weights"]}
    cells = evaluate_lib.plan(apply_fn, variables, config.evals, test,
                              targets, config.seed)
    rows.extend(run_cells([c for c in cells if c.key in todo], header,
                          os.path.join(workdir, RESULTS), progress))
  rows = load_results(workdir)
  if main:
    report_lib.write_csv(rows, os.path.join(workdir, "results.csv"))
    path = report_lib.write_report(
        rows, workdir, title=config.get("study_name", ""),
        notes=[f"Hardware: {jax.device_count()} x "
               f"{jax.devices()[0].device_kind}; {len(rows)} rows."])
    logging.info("Report: %s", path)
  return rows
