"""The one training loop: `train_and_evaluate` and `train_members`.

`train_and_evaluate(config, workdir, recipe)` trains one model.
`train_members(members, workdir)` trains K models of one architecture that
differ only in seed and starting weights/masks as ONE program: their states
are stacked along a leading model axis and the same step is `jax.vmap`-ed
over it. Both go through the same loop (`_train`): logging, periodic
evaluation (the evaluator registry), NaN/Inf checks, checkpoints and resume.
The step itself, and the compiled programs trainings share, are in
`robustjax.train.steps`.

A compression method plugs in through a `Recipe` (pruning wraps the
optimizer, distillation replaces the loss); the step itself never asks which
method it runs.

Resume order (big_vision style): the newest checkpoint in `workdir`, else
`recipe.init_variables` (fine-tuning a compressed model), else pretrained
weights from `config.model.init`, else a fresh init from `config.seed`.

The data order and augmentation are pure functions of (seed, step), so a run
killed at any point and restarted with the same command ends with the same
parameters as an uninterrupted run (same hardware).

Checkpoints: every `config.checkpoint_every_steps` steps (and at the end),
and also once `config.checkpoint_every_secs` seconds have passed since the
last save (a study's trainings use only the latter, so that a preempted
long training resumes mid-way). Under a `robustjax.preemption` guard a
training is a deferred block: a SIGTERM or SIGINT stops the loop at the end
of the step under way, which is checkpointed (when either setting is on),
and raises `Preempted`. With several processes the time-based and stop
decisions are process 0's, broadcast at every `log_every_steps`-th step, so
that all processes save and stop at the same step.
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, List, Optional, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from robustjax import checkpoint
from robustjax import io
from robustjax import lock
from robustjax import models
from robustjax import parallel
from robustjax import preemption
from robustjax import progress
from robustjax.data import loader
from robustjax.data import pipeline
from robustjax.models import batched
from robustjax.models import factory
from robustjax.robustness import evaluators
from robustjax.train import metrics as metrics_lib
from robustjax.train import optim
from robustjax.train import state as state_lib
from robustjax.train import steps


@dataclasses.dataclass
class Recipe:
  """How a compression method plugs into the training loop.

  Attributes:
    model: module to train instead of the config's model.
    init_variables: variables to start from when there is no checkpoint.
    wrap_tx: wraps the config's optax transformation (pruning keeps its
      masks in the optimizer state, see compress.pruning.wrap_optax).
      Trainings whose `wrap_tx` are the same object, or carry equal
      `steps.set_program_key` keys, share one compiled step.
    loss_fn: replaces cross-entropy (e.g. knowledge distillation).
    loss_args: a pytree passed to `loss_fn` at every step as an argument
      (e.g. the teacher's variables), not baked into the compiled step.
  """
  model: Any = None
  init_variables: Any = None
  wrap_tx: Optional[Callable[[optax.GradientTransformation],
                             optax.GradientTransformation]] = None
  loss_fn: Optional[steps.LossFn] = None
  loss_args: Any = None


@dataclasses.dataclass
class Member:
  """One of K models trained together by `train_members`."""
  config: ml_collections.ConfigDict
  workdir: str
  recipe: Optional[Recipe] = None


def total_steps(config, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


def _initial_state(config, model, tx, recipe: Recipe) -> state_lib.TrainState:
  """The state a fresh run of `config` starts from (one model)."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = recipe.init_variables
  if variables is None:
    variables = factory.init_variables(model, config, init_rng)
  return state_lib.create(variables["params"],
                          variables.get("batch_stats", {}), tx, state_rng)


def _unstack(tree, i: int):
  return jax.tree.map(lambda x: x[i], tree)


def _timed_decisions(step: int, since_save: float, every_secs: float,
                     log_every: int):
  """(a time-based checkpoint is due, the stopping signal or 0) after `step`.

  The same on every process: with several, they are process 0's, taken at
  every `log_every`-th step only and broadcast (clocks and signals differ
  between processes, and a save is collective).
  """
  due = every_secs > 0 and since_save >= every_secs
  signum = preemption.requested() or 0
  if jax.process_count() == 1:
    return due, signum
  if step % log_every:
    return False, 0
  agreed = multihost_utils.broadcast_one_to_all(np.array([due, signum],
                                                         np.int32))
  return bool(agreed[0]), int(agreed[1])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       recipe: Optional[Recipe] = None
                       ) -> state_lib.TrainState:
  """Trains (or resumes training of) a model and evaluates it periodically.

  Args:
    config: an experiment config (see configs/common.py for every field).
    workdir: where checkpoints, `config.json`, `metrics.jsonl`, TensorBoard
      summaries and `final_metrics.json` go; an existing run there resumes.
    recipe: optional compression recipe (pruning, distillation).

  Returns:
    The final `TrainState`.

  Raises:
    FloatingPointError: if the loss becomes NaN/Inf (the last good checkpoint
      is kept).
    robustjax.lock.WorkdirLockedError: another process writes `workdir`.
    robustjax.preemption.Preempted: under a preemption guard, SIGTERM or
      SIGINT stopped the training after a step (checkpointed there unless
      checkpoints are off; `detail` says which).
  """
  # One writer per workdir; a signal stops the loop after a step.
  with lock.hold(workdir, "training"), preemption.deferred():
    return _train([Member(config, workdir, recipe)], workdir,
                  stacked=False)[0]


def train_members(members: Sequence[Member], workdir: str
                  ) -> List[state_lib.TrainState]:
  """Trains K models as one vmapped program (same loop as a single run).

  The members must share everything but `seed`, their starting variables
  and the masks their recipe's optimizer wrapper computes at init (e.g.
  one-shot pruning at different sparsities) and their recipe's
  `loss_args` (e.g. each student's own teacher): the first member's model,
  optimizer update and loss function serve all of them. Member i then ends
  where `train_and_evaluate(members[i].config, ...)` ends, up to float
  reassociation. Each member's workdir receives what a single run writes
  there (config, metrics, final metrics, its own final checkpoint), so a
  later single run there resumes at the end; the stacked state is
  checkpointed in `workdir`.

  Args:
    members: the K models.
    workdir: the group's folder (stacked checkpoints; resumable as a whole).

  Returns:
    The K final states (unstacked).
  """
  if not members:
    raise ValueError("train_members needs at least one member.")
  # One writer per workdir; a signal stops the loop after a step.
  with lock.hold(workdir, "training"), preemption.deferred():
    return _train(list(members), workdir, stacked=True)


def _train(members: List[Member], workdir: str, stacked: bool):
  """The loop behind `train_and_evaluate` (K = 1) and `train_members`."""
  config = members[0].config
  recipe = members[0].recipe or Recipe()
  k = len(members)
  main = parallel.is_main_process()
  mesh = parallel.train_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  logging.info("Devices: %d x %s (%d processes); data-parallel mesh %s; "
               "%d model(s).", jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), dict(mesh.shape), k)
  for m in members:
    io.makedirs(m.workdir)
    if main:
      io.write_atomic(os.path.join(m.workdir, "config.json"),
                      m.config.to_json_best_effort(indent=2))

  train_split, eval_splits = loader.load_data(config)
  seeds = [int(m.config.seed) for m in members]
  batches = {s: pipeline.TrainBatches(train_split, config.batch_size, s,
                                      jax.process_index(),
                                      jax.process_count())
             for s in dict.fromkeys(seeds)}
  steps_per_epoch = batches[seeds[0]].steps_per_epoch
  num_steps = total_steps(config, steps_per_epoch)
  # -1: every epoch; 0: after the last step only; -2: never (a study
  # evaluates its models itself, on the same splits with the same program).
  eval_every = {-1: steps_per_epoch, 0: num_steps + 1, -2: None}.get(
      int(config.eval_every_steps), config.eval_every_steps)

  model = recipe.model or factory.build_model(config)
  base_tx = optim.make(config.optimizer, num_steps)
  txs = [(m.recipe or Recipe()).wrap_tx for m in members]
  # A recipe's own wrapper may not take the extra `total_steps` argument:
  # it then keeps the schedule of `base_tx` (and its step is keyed on the
  # length, `steps.set_program_key`).
  txs = [optax.with_extra_args_support(w(base_tx) if w else base_tx)
         for w in txs]
  states = [_initial_state(m.config, model, tx, m.recipe or Recipe())
            for m, tx in zip(members, txs)]
  shared_batch = len(set(seeds)) == 1
  # Members with their own loss arguments (e.g. teachers) get them stacked.
  member_args = [(m.recipe or Recipe()).loss_args for m in members]
  own_args = stacked and any(a is not member_args[0] for a in member_args)
  step_fn = steps.shared_train_step(
      model, config, num_steps, txs[0], mesh, loss_fn=recipe.loss_fn,
      wrap_tx=recipe.wrap_tx, stacked=stacked,
      batch_axis=None if shared_batch else 1,
      loss_axis=0 if own_args else None)
  state = batched.stack(states) if stacked else states[0]
  state = parallel.replicate(mesh, state)
  loss_args = parallel.replicate(
      mesh, batched.stack(member_args) if own_args else recipe.loss_args)
  length = parallel.replicate(mesh, jnp.int32(num_steps))

  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(checkpoint.abstract(state))
    logging.info("Resuming from checkpoint at step %d in %s.",
                 int(np.ravel(jax.device_get(state.step))[0]), ckpt.directory)
  start = int(np.ravel(jax.device_get(state.step))[0])
  logging.info("Training %s on %s (%d examples) for %d steps (%d per epoch) "
               "from step %d.", config.model.name, train_split.name,
               len(train_split), num_steps, steps_per_epoch, start)

  apply_fn = models.inference_fn(recipe.model or factory.build_model(config))
  writers = [metrics_lib.MetricWriter(m.workdir) for m in members]
  next_batch = pipeline.MemberBatches(
      [batches[s] for s in (seeds[:1] if shared_batch else seeds)], mesh,
      stacked).iterate(start, 0 if mesh.devices.flat[0].platform == "cpu"
                       else pipeline.ACCELERATOR_PREFETCH)

  def member_variables(i):
    return _unstack(state.variables, i) if stacked else state.variables

  def evaluate(at):
    results = []
    for i, w in enumerate(writers):
      acc = {name: evaluators.accuracy(apply_fn, member_variables(i), split,
                                       config.eval_batch_size)
             for name, split in eval_splits.items()}
      w.write(at, "eval", **{f"{n}_accuracy": a for n, a in acc.items()})
      results.append(acc)
    logging.info("Step %d eval: %s", at, "; ".join(
        f"{n} " + " ".join(f"{r[n]:.2%}" for r in results)
        for n in eval_splits))
    return results

  def check_finite(pending, at):
    if not pending:
      return
    finite = np.min([np.ravel(p["finite"]) for p in pending], axis=0)
    if np.all(finite >= 1.0):
      return
    last = ckpt.latest_step()
    kept = (f"the last good checkpoint (step {last}) is intact in "
            f"{ckpt.directory}" if last is not None else
            "no checkpoint had been written yet")
    who = (f" of member(s) {np.flatnonzero(finite < 1).tolist()}"
           if stacked else "")
    raise FloatingPointError(
        f"The training loss or parameters{who} became NaN/Inf before step "
        f"{at}. Stopped without saving; {kept}. Lower "
        "config.optimizer.learning_rate or set "
        "config.optimizer.grad_clip_norm, then use a fresh --workdir (or "
        "rerun here to retry from that checkpoint).")

  bar = progress.Progress(num_steps, "train", unit="step", initial=start)
  pending, t0, t_steps, results = [], time.time(), 0, None
  every_secs = float(config.get("checkpoint_every_secs", 0.0))
  saves = config.checkpoint_every_steps > 0 or every_secs > 0
  last_save = time.monotonic()
  for i in range(start + 1, num_steps + 1):
    images, labels = next(next_batch)
    state, m = step_fn(state, images, labels, loss_args, length)
    pending.append(m)
    t_steps += 1
    bar.update()
    last = i == num_steps
    if i % config.log_every_steps == 0 or last:
      pending = jax.device_get(pending)
      check_finite(pending, i)
      rate = t_steps * config.batch_size / max(time.time() - t0, 1e-9)
      mean = {n: np.mean([np.ravel(p[n]) for p in pending], axis=0)
              for n in ("loss", "accuracy")}
      for j, w in enumerate(writers):
        w.write(i, "train", images_per_sec=rate,
                epoch=i / steps_per_epoch,
                **{n: float(v[j]) for n, v in mean.items()})
      logging.info("Step %d/%d: loss %s, train acc %s, %.0f img/s%s.", i,
                   num_steps, " ".join(f"{v:.4f}" for v in mean["loss"]),
                   " ".join(f"{v:.2%}" for v in mean["accuracy"]),
                   rate * k, f" (all {k} models)" if stacked else "")
      pending, t0, t_steps = [], time.time(), 0
    if eval_every is not None and (i % eval_every == 0 or last):
      results = evaluate(i)
    every = config.checkpoint_every_steps  # 0: never (the caller saves).
    timed, stop = _timed_decisions(i, time.monotonic() - last_save,
                                   every_secs, config.log_every_steps)
    # A time-based save is not needed after the last step (the caller has
    # the final state); a stop's is.
    if (every > 0 and (i % every == 0 or last)) or (
        saves and (stop or (timed and not last))):
      check_finite(jax.device_get(pending), i)
      ckpt.save(i, state)
      last_save = time.monotonic()
    if stop:
      bar.close()
      for w in writers:
        w.close()
      ckpt.close()
      kept = (f"is checkpointed at step {i} of {num_steps}" if saves else
              f"stopped at step {i} of {num_steps} with no checkpoint "
              "(config.checkpoint_every_secs and checkpoint_every_steps "
              "are 0), so it restarts")
      raise preemption.Preempted(stop,
                                 detail=f"the training in {workdir} {kept}")
  bar.close()
  if eval_every is None:
    results = [{} for _ in members]  # final_metrics.json: the step only.
  elif results is None:  # Resumed after the last step: evaluate once more.
    results = evaluate(num_steps)
  for w in writers:
    w.close()
  ckpt.close()

  finals = [_unstack(state, j) for j in range(k)] if stacked else [state]
  for j, m in enumerate(members):
    if stacked:  # Each member's folder resumes like a single run.
      member_ckpt = checkpoint.Checkpointer(m.workdir,
                                            keep=config.keep_checkpoints)
      if member_ckpt.latest_step() != num_steps:
        member_ckpt.save(num_steps, finals[j])
      member_ckpt.close()
    if main:
      io.write_json(os.path.join(m.workdir, "final_metrics.json"), {
          "step": num_steps,
          **{f"{n}_accuracy": v for n, v in results[j].items()}})
  # Every process returns only once the main one has written the run's
  # files (a caller on another process may read final_metrics.json).
  parallel.barrier(f"robustjax_train_done:{workdir}")
  return finals
