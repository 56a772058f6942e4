"""The resumable study runner: `run_study(config, workdir)`.

For every seed replicate and every model of the grid (robustjax.study.grid)
the runner builds the model (trains the originals, compresses them with
robustjax.compress.recipes), then runs every evaluation cell of
`config.evals` on it (robustjax.robustness.evaluators) and records each
cell in the journal `WORKDIR/journal.jsonl` (its rows, plus the per-example
correctness as bit-packed arrays). Cells already in the journal are skipped,
and so is building a model whose cells are all done; built models are
reused from `WORKDIR/models/<model_id>__s<seed>/`. Killing the run at any
moment and re-running the same command therefore finishes the grid without
redoing finished work, with the same results.

Preemption: a study runs under a `robustjax.preemption` guard. On SIGTERM or
SIGINT the evaluation cell under way is abandoned (nothing of it was
recorded), a training stops after its current step and is checkpointed
(trainings also checkpoint every `config.checkpoint_every_secs`), the
partial report is written, and `run_study` raises `Preempted` with one line
saying how many cells are saved and that the same command resumes; a rerun
resumes that training mid-way, ending bit-identical to an uninterrupted run
(same machine).

Outputs: `results.jsonl` (one row per model x seed x shift x name x level;
schema `ROW_FIELDS`), `results.csv`, `report.md`, `plots/`; the report is
rewritten as cells finish (marked partial until the grid is complete).

The workdir may be a local folder or a bucket URL (`gs://...`): every file
goes through robustjax.io / robustjax.checkpoint (tests/study/bucket_test.py
runs a study in a `gs://` test double and resumes it). In a bucket the
journal is one object per record, and there is no `log.txt` and no
TensorBoard event files (object stores cannot append).

`launch/compress.py` runs the same grid with only the clean and domain
cells; `launch/evaluate.py` evaluates one saved model (`evaluate_saved`).
"""

import contextlib
import dataclasses
import functools
import json
import os
import platform
import subprocess
import time
from typing import List, Optional, Sequence

from absl import logging
import jax
import ml_collections

from robustjax import cpu_setup
from robustjax import io
from robustjax import lock
from robustjax import models as models_lib
from robustjax import parallel
from robustjax import platform_info
from robustjax import preemption
from robustjax import progress
from robustjax import timing
from robustjax.compress import saved
from robustjax.data import loader
from robustjax.models import factory
from robustjax.robustness import evaluators
from robustjax.robustness.evaluators import base as evaluators_base
from robustjax.robustness.evaluators import transfer
from robustjax.study import builder
from robustjax.study import evaluation
from robustjax.study import grid as grid_lib
from robustjax.study import grouped
from robustjax.study import journal as journal_lib
from robustjax.study import report as report_lib
from robustjax.study import runtimes
from robustjax.study import tb

RESULTS = report_lib.RESULTS
JOURNAL = report_lib.JOURNAL
ENVIRONMENT = report_lib.ENVIRONMENT
TIMING = runtimes.TIMING  # One line per run segment: wall / compile by stage.
ROW_FIELDS = evaluation.ROW_FIELDS
REPORT_EVERY_S = 300.0  # Partial report period while the grid runs.


@functools.lru_cache(maxsize=None)  # Once per process: it runs git.
def code_version() -> Optional[str]:
  """The git commit of the robustjax code that runs ('-dirty' if edited).

  None when the package is not robustjax's own git checkout (e.g. a wheel
  install) or git is missing.
  """
  here = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))  # The folder holding robustjax/.
  git = lambda *a: subprocess.run(("git", "-C", here) + a, check=True,
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip()
  try:
    # Only robustjax's own checkout (not a repository that happens to
    # contain an installed copy).
    top = git("rev-parse", "--show-toplevel")
    if os.path.realpath(top) != os.path.realpath(here):
      return None
    commit = git("rev-parse", "--short=7", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("-dirty" if dirty else "")


def environment(config: Optional[ml_collections.ConfigDict] = None) -> dict:
  """The machine a study ran on (numbers are bit-identical only on one).

  With the precision its models computed in (`platform_info.precision_info`):
  platform, device kind, `jax_default_matmul_precision` and what float32
  matrix products compute in there (TF32 by default on a GPU), and, given
  the study's `config`, whether models are built in bfloat16
  (`model.half_precision`) and what float models are evaluated in
  ("evaluation_precision": bf16 with `evals.half_precision`).
  """
  machine = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f
               if l.startswith("model name")]
    if names:
      machine = f"{names[0]} ({len(names)} cores)"
  except OSError:
    pass
  # XLA flags move float rounding (e.g. cpu_setup.CPU_ONLY_XLA_FLAGS), so
  # bit-identical numbers need the same flags as well as the same machine.
  # The allocator (cpu_setup.cpu_malloc_environ) moves speed and memory, not
  # numbers.
  info = platform_info.precision_info(
      None if config is None else config.model.half_precision)
  if config is not None:
    info["evaluation_precision"] = (
        "bf16" if (config.get("evals") or {}).get("half_precision", False)
        else info["precision"])
  return {"machine": machine, "jax": jax.__version__,
          "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "malloc": cpu_setup.cpu_malloc_in_use(), "code": code_version(),
          **info}


def check_record(record) -> None:
  """Raises ValueError unless `record` is a study cell with valid rows."""
  journal_lib.check_cell(record)
  for row in record["rows"]:
    validate_row(row)


def load_results(workdir: str) -> List[dict]:
  """Rows of a study workdir (from its journal)."""
  return journal_lib.rows_of(journal_lib.Journal(
      os.path.join(workdir, JOURNAL), check=check_record))


# The per-cell functions live in robustjax.study.evaluation.
record_key = evaluation.record_key
validate_row = evaluation.validate_row
run_cell = evaluation.run_cell


def log_times(workdir: str, times: timing.Stages, **extra) -> None:
  """Logs where this run's time went and appends it to `timing.jsonl`.

  One line per run segment (a resumed study adds one), so a report can sum
  a study's compile and run time over its segments.
  """
  logging.info("Time by stage (wall vs JAX trace+compile):\n%s",
               times.summary())
  if parallel.is_main_process():
    io.append_jsonl(os.path.join(workdir, TIMING), [
        {**times.as_dict(), **extra,
         "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
         "peak_rss_mb": timing.peak_rss_mb(), **environment()}])


def write_outputs(workdir: str, journal) -> str:
  """results.jsonl, then report.md / results.csv / plots / TensorBoard."""
  if not parallel.is_main_process():
    return ""
  rows = journal_lib.rows_of(journal)
  io.write_atomic(os.path.join(workdir, RESULTS), "".join(
      json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
  tb.write_study_summaries(rows, workdir)
  return report_lib.render(workdir)


def run_study(config: ml_collections.ConfigDict, workdir: str,
              shifts: Sequence[str] = evaluators_base.SHIFTS) -> List[dict]:
  """Runs (or finishes) the study grid of `config` in `workdir`.

  Args:
    config: a study config (configs/default.py and friends): training fields,
      `compress` (method settings), `study` (the grid) and `evals` (the
      shifts).
    workdir: output folder; re-running with the same workdir resumes.
    shifts: the shift types to evaluate (launch/compress.py: clean, domain).

  Returns:
    All result rows.

  Raises:
    robustjax.lock.WorkdirLockedError: another process writes `workdir`.
    robustjax.io.StorageError: the storage refused a file (disk full,
      read-only...); the message names the file and the cells saved.
    robustjax.preemption.Preempted: SIGTERM or SIGINT stopped the study;
      its message is one line saying how many cells are saved and that the
      same command resumes.
  """
  with preemption.guard(), lock.hold(workdir, "study"), storage_errors(
      workdir, JOURNAL):
    return _run_study(config, workdir, shifts)


@contextlib.contextmanager
def storage_errors(workdir: str, journal_name: str):
  """Turns a storage OSError (disk full...) into one `io.StorageError`
  sentence naming the file and how many cells the journal holds."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    error = io.storage_os_error(e)
    if error is None:
      raise
    path = os.path.join(workdir, journal_name)
    try:
      saved_cells = (f"{len(journal_lib.Journal(path))} cells are saved in "
                     f"{path}")
    except Exception:  # pylint: disable=broad-except
      saved_cells = f"the cells saved so far are in {path}"
    raise io.StorageError(io.describe_storage_error(error, saved_cells),
                          error.filename or "") from e


def _run_study(config, workdir: str, shifts: Sequence[str]) -> List[dict]:
  """`run_study`'s work, with the workdir's lock held."""
  times = timing.Stages()
  io.makedirs(workdir)
  if parallel.is_main_process():
    progress.log_to_file(workdir)  # Idempotent (launchers already did).
    io.write_atomic(os.path.join(workdir, "config.json"),
                    config.to_json_best_effort(indent=2))
    io.write_json(os.path.join(workdir, ENVIRONMENT), environment(config))
  journal = journal_lib.Journal(os.path.join(workdir, JOURNAL),
                                check=check_record)
  journal.compact()  # Damaged records moved aside: their cells are redone.
  where = _Position()
  try:
    return _run_grid(config, workdir, shifts, journal, times, where)
  except preemption.Preempted as e:
    _stopped(e, workdir, journal, where)


@dataclasses.dataclass
class _Position:
  """What a study is doing, for the line a preempted study ends with."""
  doing: str = "starting"
  total: Optional[int] = None  # Cells of the grid, once known.


def _stopped(e: preemption.Preempted, workdir: str, journal,
             where: _Position):
  """Writes the partial report, then raises `e` again with its one line."""
  if len(journal):
    try:
      write_outputs(workdir, journal)
    except preemption.Preempted:  # A second signal: no report.
      pass
    except Exception as error:  # pylint: disable=broad-except
      logging.warning("The partial report was not written: %s", error)
  path = os.path.join(workdir, JOURNAL)
  cells = len(journal) if where.total is None else (
      f"{len(journal)} of {where.total}")
  raise preemption.Preempted(
      e.signum, f"Stopped by {e.signal_name} while {where.doing}: {cells} "
      f"cells are saved in {path}" + (f", and {e.detail}" if e.detail else "")
      + "; rerun the same command to resume.", e.detail) from e


def _run_grid(config, workdir: str, shifts: Sequence[str], journal, times,
              where: _Position) -> List[dict]:
  """Builds the models and runs the cells the journal lacks."""
  specs = grid_lib.model_specs(config)
  seeds = grid_lib.seeds(config)
  with times.stage("load data"):
    _, evals_data = loader.load_data(config)
    test = evals_data.pop("test")
    targets = {k.split("/", 1)[1]: v for k, v in evals_data.items()}
    cells = {s: [c for c in evaluators.build(config.evals, test, targets, s,
                                             data=config.dataset)
                 if c.shift in shifts] for s in seeds}
  transfer_keys = evaluation.transfer_keys(config, shifts)

  def keys_of(spec, seed):
    extra = transfer_keys if spec.method != "original" else []
    return [c.key for c in cells[seed]] + extra

  todo = {(spec.model_id, s): [k for k in keys_of(spec, s) if record_key(
      spec.model_id, s, k) not in journal] for s in seeds for spec in specs}
  total = sum(len(keys_of(spec, s)) for s in seeds for spec in specs)
  left = sum(len(v) for v in todo.values())
  logging.info("Study: %d models x %d seeds, %d cells, %d already done.",
               len(specs), len(seeds), total, total - left)
  where.total = total
  models = builder.Models(config, workdir, specs, times)
  together = grouped.enabled(config)
  doing = lambda what: setattr(where, "doing", what)
  if together:
    pending = [(models.by_id[m], s) for (m, s), keys in todo.items() if keys]
    builder.train_groups(models, specs, seeds, pending, doing)
  bar = progress.Progress(total, "study", unit="cell", initial=total - left)
  report_lib.write_progress(workdir, total)
  last_report = time.time()
  for seed in seeds:
    transfer.forget()  # Sources of earlier seeds are not used again.
    evaluator = evaluation.Evaluator(journal, cells[seed], models, config,
                                     times, bar, doing, bool(transfer_keys))

    def member(spec, seed=seed, evaluator=evaluator):
      doing(f"building {spec.model_id} (seed {seed})")
      # A model is built and saved whole; a training stops after a step.
      with preemption.deferred():
        model = models.for_evaluation(models.get(spec, seed))
      return evaluator.model_cells(spec, seed, model,
                                   todo[(spec.model_id, seed)])

    waiting = [spec for spec in specs if todo[(spec.model_id, seed)]]
    if together:  # The seed's models, then those sharing a program at once.
      batches = grouped.evaluation_groups([member(s) for s in waiting])
    else:  # One model at a time, each built when its turn comes.
      batches = ([member(s)] for s in waiting)
    for batch in batches:
      evaluator.run(batch)
      for m in batch:
        models.release(m.spec, seed)
      if time.time() - last_report > REPORT_EVERY_S:
        with times.stage("report"):
          write_outputs(workdir, journal)
        last_report = time.time()
  bar.close()
  with times.stage("report"):
    path = write_outputs(workdir, journal)
  log_times(workdir, times, cells=left)
  logging.info("Report: %s", path)
  return journal_lib.rows_of(journal)


def evaluate_saved(config, workdir: str) -> List[dict]:
  """Evaluates one trained or compressed model on `config.evals`, resumably.

  Args:
    config: the model's config with an `evals` block.
    workdir: a training workdir (its newest checkpoint) or a saved model
      folder (`compression.json`, from launch/compress.py or a study).

  Returns:
    All rows; also written to `workdir/eval_results.jsonl` (the journal is
    `workdir/eval_journal.jsonl`).
  """
  with lock.hold(workdir, "evaluation"), storage_errors(
      workdir, "eval_journal.jsonl"):
    return _evaluate_saved(config, workdir)


def _evaluate_saved(config, workdir: str) -> List[dict]:
  """`evaluate_saved`'s work, with the workdir's lock held."""
  if saved.is_done(workdir):
    model = saved.load(workdir)
    meta = model.metadata
    header = {"model": io.as_path(workdir).name,
              "method": meta["method"], "size_bits": meta["size_bits"],
              "sparsity": meta["sparsity"]}
  else:
    variables = saved.restore_trained(workdir)
    apply_fn = models_lib.inference_fn(factory.build_model(config))
    model = saved.Compressed(apply_fn, variables, {})
    header = {"model": config.model.name, "method": "original"}
  _, evals_data = loader.load_data(config)
  test = evals_data.pop("test")
  targets = {k.split("/", 1)[1]: v for k, v in evals_data.items()}
  journal = journal_lib.Journal(os.path.join(workdir, "eval_journal.jsonl"),
                                check=journal_lib.check_cell)
  journal.compact()
  cells = [c for c in evaluators.build(config.evals, test, targets,
                                       config.seed, data=config.dataset)
           if c.key not in journal]
  logging.info("Evaluating %s: %d cells to run, %d already done.", workdir,
               len(cells), len(journal))
  bar = progress.Progress(len(cells), "evaluate", unit="cell")
  for cell in cells:
    rows = run_cell(journal, cell.key, cell, model, header)
    bar.update(1)
    bar.write(f"{cell.key}: " + ", ".join(
        f"{100 * r['accuracy']:.1f}%" for r in rows))
  bar.close()
  rows = journal_lib.rows_of(journal)
  if parallel.is_main_process():
    io.write_atomic(os.path.join(workdir, "eval_results.jsonl"), "".join(
        json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
  return rows

