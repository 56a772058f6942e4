"""Local runner for a config's `sweep(add)` definition (big_vision style).

A config file may define, next to `get_config`,

  def sweep(add):
    for sparsity in (0.0, 0.5, 0.9):
      add(**{"seed": 0, "compress.init_sparsity": sparsity})

  def metrics():          # optional: headline numbers for the summary
    return ["test_accuracy"]

Each `add(**overrides)` is one *point*: the base config (from `get_config`)
with dotted-path overrides (unknown keys are rejected). `add(name=...)` names
a point; otherwise the name is built from the overrides, e.g.
`seed=0,sparsity=0.5`. `run_sweep` trains every point in `workdir/<name>/`
with the normal trainer and records its progress in the journal
`workdir/sweep.jsonl` (robustjax.study.journal; one record per point and
status change, keyed by the point name: `status` running | done | failed,
`metrics`, `overrides`, `config_hash`, `mode`, `seconds`, `error`). Running
the same command again skips points whose last status is `done` and resumes
the others (a point's own checkpoints make an interrupted point resume
mid-run).

In vmapped mode, points whose configs differ only in `VMAPPABLE_FIELDS`
(`seed`, `compress.init_sparsity`) are trained together as one vmapped
program (`robustjax.train.train_members`, at most `max_models` per program);
each member still ends up in its own `workdir/<name>/`, as if trained alone.
"""

import dataclasses
import hashlib
import json
import os
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import logging
import ml_collections

from robustjax import io
from robustjax import lock
from robustjax.compress import pruning
from robustjax.compress import recipes
from robustjax.study import journal as journal_lib
from robustjax.train import trainer

SWEEP_FILE = "sweep.jsonl"
VMAPPED_DIR = "_vmapped"  # Checkpoints of vmapped groups.
# Config fields in which the members of one vmapped group may differ.
VMAPPABLE_FIELDS = ("seed", "compress.init_sparsity")


def group_key(config: ml_collections.ConfigDict) -> str:
  """Configs with equal keys can be trained as one vmapped program."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = 0
  c.compress.init_sparsity = 0.0
  return c.to_json(sort_keys=True)


def _member_recipe(config, pruned_group: bool) -> Optional[trainer.Recipe]:
  """A member's recipe; in a group with pruned members, dense members get
  the all-kept masks (an exact no-op) so every member's state has one
  structure."""
  recipe = recipes.from_config(config)
  if recipe is None and pruned_group:
    recipe = trainer.Recipe(wrap_tx=pruning.magnitude_pruner(0.0).wrap_tx)
  return recipe


@dataclasses.dataclass
class Point:
  """One point of a sweep: its name, overrides and resolved config."""
  name: str
  overrides: Dict[str, Any]
  config: ml_collections.ConfigDict

  @property
  def config_hash(self) -> str:
    """Hash of what the point trains (runner options in `sweep` excluded)."""
    d = self.config.to_dict()
    d.pop("sweep", None)
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SweepError(RuntimeError):
  """Raised after a sweep in which some points failed (others finished)."""


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-path overrides, e.g. `{"a.b": 1}`.

  Raises:
    KeyError: if a path does not name an existing field.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for path, value in overrides.items():
    node, parts = config, path.split(".")
    for i, part in enumerate(parts):
      if part not in node:
        where = ".".join(parts[:i]) or "the config"
        raise KeyError(
            f"Sweep override {path!r}: {where} has no field {part!r} (it has "
            f"{', '.join(sorted(node.keys()))}).")
      if i < len(parts) - 1:
        node = node[part]
    node[parts[-1]] = tuple(value) if isinstance(value, list) else value
  return config


def _default_name(overrides: Dict[str, Any]) -> str:
  if not overrides:
    return "base"
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())


def _check_name(name: str) -> str:
  if not name or name.startswith(("_", ".")) or "/" in name or any(
      c.isspace() for c in name):
    raise ValueError(f"Invalid sweep point name {name!r}: it becomes a "
                     "folder; no '/', spaces or leading '_' / '.'.")
  return name


def collect_points(sweep_fn: Callable[[Callable[..., None]], None],
                   base_config: ml_collections.ConfigDict) -> List[Point]:
  """Calls `sweep_fn(add)` and returns its points in order.

  Args:
    sweep_fn: the config module's `sweep(add)`.
    base_config: the config every point starts from.

  Returns:
    The points, with unique names.

  Raises:
    ValueError: on duplicate names; KeyError on unknown override fields.
  """
  points: List[Point] = []

  def add(name: Optional[str] = None, **overrides):
    name = _check_name(name or _default_name(overrides))
    if any(p.name == name for p in points):
      raise ValueError(f"Two sweep points are named {name!r}; pass distinct "
                       "`name=` arguments to add().")
    points.append(Point(name, dict(overrides),
                        apply_overrides(base_config, overrides)))

  sweep_fn(add)
  if not points:
    raise ValueError("The sweep function added no points.")
  return points


def read_status(workdir: str) -> Dict[str, dict]:
  """The last record of every point (empty for a fresh sweep)."""
  journal = journal_lib.Journal(os.path.join(workdir, SWEEP_FILE))
  return {r["key"]: r for r in journal}


def plan_groups(points: Sequence[Point], vmap: bool,
                max_models: int) -> List[List[Point]]:
  """Splits points into programs: vmappable groups (in order) or singles."""
  if not vmap:
    return [[p] for p in points]
  by_key: Dict[str, List[Point]] = {}
  for p in points:
    by_key.setdefault(group_key(p.config), []).append(p)
  groups = []
  for members in by_key.values():
    for i in range(0, len(members), max(1, max_models)):
      groups.append(members[i:i + max_models])
  return groups


def _record(journal, point: Point, status: str, **fields) -> dict:
  return journal.add(point.name, {
      "point": point.name, "status": status, "time": time.time(),
      "overrides": point.overrides, "config_hash": point.config_hash,
      **fields})


def _group_dir(workdir: str, members: Sequence[Point]) -> str:
  text = "\n".join(f"{p.name}:{p.config_hash}" for p in members)
  return os.path.join(workdir, VMAPPED_DIR,
                      hashlib.sha256(text.encode()).hexdigest()[:12])


def run_sweep(base_config: ml_collections.ConfigDict, workdir: str,
              sweep_fn: Callable[[Callable[..., None]], None], *,
              vmap: bool = False, max_models: int = 8,
              headline: Sequence[str] = ()) -> Dict[str, dict]:
  """Runs (or resumes) every point of a sweep.

  Args:
    base_config: the config the sweep's overrides apply to.
    workdir: the sweep folder; point `p` trains in `workdir/p/`.
    sweep_fn: `sweep(add)` from the config file.
    vmap: train points that differ only in `VMAPPABLE_FIELDS` as one
      vmapped program (see `robustjax.train.train_members`).
    max_models: at most this many models per vmapped program.
    headline: metric names to log in the end-of-sweep summary.

  Returns:
    {point name: its last status row} for every point of the sweep.

  Raises:
    ValueError: if a finished point was trained from a different config
      (the sweep definition changed under an existing workdir).
    SweepError: if some points failed; the others are still run and
      recorded, and rerunning retries only the unfinished ones.
    robustjax.lock.WorkdirLockedError: another process writes `workdir`.
  """
  with lock.hold(workdir, "sweep"):  # One writer per workdir.
    return _run_sweep(base_config, workdir, sweep_fn, vmap, max_models,
                      headline)


def _run_sweep(base_config, workdir, sweep_fn, vmap, max_models, headline):
  """`run_sweep`'s work, with the workdir's lock held."""
  io.makedirs(workdir)
  points = collect_points(sweep_fn, base_config)
  journal = journal_lib.Journal(os.path.join(workdir, SWEEP_FILE))
  journal.compact()
  status = {r["key"]: r for r in journal}
  todo = []
  for p in points:
    row = status.get(p.name)
    if row and row.get("status") == "done":
      if row.get("config_hash") != p.config_hash:
        raise ValueError(
            f"Point {p.name!r} in {workdir} finished with a different config "
            f"(hash {row.get('config_hash')} != {p.config_hash}): the sweep "
            "or base config changed. Use a fresh --workdir, or delete that "
            f"point's folder and its lines in {SWEEP_FILE}.")
      continue
    todo.append(p)
  logging.info("Sweep of %d points in %s: %d finished, %d to run%s.",
               len(points), workdir, len(points) - len(todo), len(todo),
               " (vmapped)" if vmap else "")

  for group in plan_groups(todo, vmap, max_models):
    t0 = time.time()
    names = [p.name for p in group]
    for p in group:
      status[p.name] = _record(journal, p, "running",
                               mode="vmapped" if len(group) > 1 else "single",
                               group=names if len(group) > 1 else None)
    try:
      dirs = [os.path.join(workdir, p.name) for p in group]
      if len(group) == 1:
        trainer.train_and_evaluate(group[0].config, dirs[0],
                                   recipes.from_config(group[0].config))
      else:
        logging.info("Training %d points as one vmapped program: %s",
                     len(group), ", ".join(names))
        pruned = any(p.config.compress.init_sparsity for p in group)
        trainer.train_members(
            [trainer.Member(p.config, d, _member_recipe(p.config, pruned))
             for p, d in zip(group, dirs)], _group_dir(workdir, group))
      finals = []
      for d in dirs:
        finals.append(io.read_json(os.path.join(d, "final_metrics.json")))
    except Exception as e:  # pylint: disable=broad-except
      logging.error("Sweep point(s) %s failed:\n%s", ", ".join(names),
                    traceback.format_exc())
      for p in group:
        status[p.name] = _record(journal, p, "failed",
                                 error=f"{type(e).__name__}: {e}"[:2000],
                                 seconds=time.time() - t0)
      continue
    for p, final in zip(group, finals):
      status[p.name] = _record(journal, p, "done", metrics=final,
                               seconds=time.time() - t0,
                               mode="vmapped" if len(group) > 1 else "single")

  _log_summary(points, status, headline)
  failed = [p.name for p in points if status[p.name]["status"] != "done"]
  if failed:
    raise SweepError(f"{len(failed)} of {len(points)} sweep points did not "
                     f"finish: {', '.join(failed)}. See the errors in "
                     f"{os.path.join(workdir, SWEEP_FILE)}; rerun the same "
                     "command to retry them.")
  return {p.name: status[p.name] for p in points}


def _log_summary(points, status, headline):
  for p in points:
    row = status.get(p.name, {})
    metrics = row.get("metrics") or {}
    shown = headline or sorted(k for k in metrics if k != "step")
    logging.info("  %-32s %-8s %s", p.name, row.get("status"), "  ".join(
        f"{k} {metrics[k]:.4f}" for k in shown if k in metrics))
