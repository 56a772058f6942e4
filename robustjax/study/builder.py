"""Builds (or reloads) the models of a study's grid, each once per seed.

`Models.get(spec, seed)` returns a saved model from its folder
`WORKDIR/models/<model_id>__s<seed>/`, training or compressing it first
(robustjax.compress.recipes) when it is not there; a damaged one is moved
aside and rebuilt. `train_groups` trains the models that share one program
as vmapped groups first (robustjax.study.grouped, `config.study.grouped`).
"""

import os
from typing import Callable, Sequence

from absl import logging
import jax.numpy as jnp

from robustjax import checkpoint
from robustjax import preemption
from robustjax import timing
from robustjax.compress import recipes
from robustjax.compress import saved
from robustjax.study import grid as grid_lib
from robustjax.study import grouped


class Models:
  """Builds (or reloads) the models of the grid, each once per seed."""

  def __init__(self, config, workdir: str, specs, times=None):
    self.config = config
    self.times = times or timing.Stages()
    self.root = os.path.join(workdir, "models")
    self.by_id = {s.model_id: s for s in specs}
    self._cache = {}

  def folder(self, spec, seed: int) -> str:
    return os.path.join(self.root,
                        f"{spec.model_id.replace('/', '__')}__s{seed}")

  def get(self, spec: grid_lib.ModelSpec, seed: int) -> saved.Compressed:
    key = (spec.model_id, seed)
    if key not in self._cache:
      self._cache[key] = self._build(spec, seed, self.folder(spec, seed))
    return self._cache[key]

  def for_evaluation(self, model: saved.Compressed) -> saved.Compressed:
    """`model` as the study evaluates it: a float model in bfloat16 with
    `evals.half_precision` (a PTQ model keeps its float32 simulation)."""
    if (not self.config.evals.get("half_precision", False) or
        model.metadata.get("quantization")):
      return model
    return saved.Compressed(
        saved.apply_fn_for(model.metadata, jnp.bfloat16), model.variables,
        model.metadata)

  def release(self, spec, seed):
    """Drops a compressed model from memory (originals are reused)."""
    if spec.method != "original":
      self._cache.pop((spec.model_id, seed), None)

  def _build(self, spec, seed, folder) -> saved.Compressed:
    if saved.is_done(folder):
      try:
        return saved.load(folder)
      except checkpoint.DamagedCheckpointError as e:
        # Missing or unreadable variables, metadata that is not JSON, a
        # checksum that differs: kept aside for inspection, then rebuilt.
        moved = saved.set_aside(folder)
        logging.warning("The saved model %s is damaged (%s): moved it to %s "
                        "and rebuilding it.", folder,
                        getattr(e, "reason", e), moved)
    with self.times.stage(f"build/{spec.method}"):
      return self._make(spec, seed, folder)

  def _config(self, spec, seed):
    # Training does not evaluate: the study's clean and domain cells
    # evaluate the finished model (with the program and batch that
    # training's evaluation used), which is saved as soon as it is built.
    # It checkpoints by time only (config.checkpoint_every_secs, and on a
    # signal), not every N steps: most of these trainings are short, and a
    # preempted long one resumes from its last checkpoint.
    return recipes.derived_config(
        self.config, seed=grid_lib.training_seed(spec, seed),
        eval_every_steps=-2, checkpoint_every_steps=0)

  def plan(self, spec, seed) -> recipes.Training:
    """The training that builds a model of any method but quantize."""
    cfg, folder = self._config(spec, seed), self.folder(spec, seed)
    if spec.method in ("original", "replicate"):
      # A replicate: the original's recipe from an independent seed.
      return recipes.plan_original(cfg, folder, spec.arch)
    st = spec.settings
    if spec.method in ("distill", "distill_control"):
      return recipes.plan_distill(self.get(self.by_id[spec.base_id], seed),
                                  cfg, folder, arch=spec.arch,
                                  alpha=st["alpha"])
    if spec.method != "prune":
      raise ValueError(f"Unknown method {spec.method!r}")
    return recipes.plan_prune(
        self.get(self.by_id[spec.base_id], seed).variables, cfg, folder,
        sparsity=st["sparsity"], scope=st["scope"], schedule=st["schedule"],
        arch=spec.arch,
        structure="channel" if st["structured"] else "unstructured")

  def train_group(self, members: Sequence[grouped.Member]) -> None:
    """Trains `members` (unbuilt) as one vmapped group, saving each."""
    method = members[0][0].method
    with self.times.stage(f"build/{method}"):
      recipes.train_together(
          [self.plan(spec, seed) for spec, seed in members],
          os.path.join(self.root, "groups", grouped.folder_name(members)))

  def _make(self, spec, seed, folder) -> saved.Compressed:
    if spec.method != "quantize":  # Every other method trains.
      return self.plan(spec, seed).run()
    base = self.get(self.by_id[spec.base_id], seed)
    original = self.get(self.by_id[spec.original_id], seed)
    return recipes.quantize(base, self._config(spec, seed), folder,
                            weight_bits=spec.settings["weight_bits"],
                            reference=original.variables)


def train_groups(models: Models, specs, seeds,
                 pending: Sequence[grouped.Member],
                 doing: Callable[[str], None] = lambda _: None) -> None:
  """Trains the unbuilt models that `pending` cells need and that share a
  program in vmapped groups (robustjax.study.grouped); `Models.get` then
  loads them. `doing` hears what is under way (a preemption's message)."""
  wanted = grouped.needed(models.by_id, pending)
  for members in grouped.groups(
      specs, seeds, wanted,
      lambda spec, seed: saved.is_done(models.folder(spec, seed))):
    doing(f"training {len(members)} models together ("
          f"{members[0][0].method}, {members[0][0].arch})")
    logging.info("Training %d models as one vmapped group: %s.",
                 len(members), ", ".join(f"{s.model_id} s{seed}"
                                         for s, seed in members))
    with preemption.deferred():  # Every member is saved whole.
      models.train_group(members)
