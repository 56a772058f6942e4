"""Training loop: `train_and_evaluate(config, workdir)`.

Resume order (big_vision style): the newest checkpoint in `workdir`, else
`hooks.init_variables` (fine-tuning a compressed model), else pretrained
weights from `config.model.init`, else a fresh init from `config.seed`.

The data order and augmentation are pure functions of (seed, step), so a run
killed at any point and restarted with the same command ends with the same
parameters as an uninterrupted run (same hardware).
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from robustjax import io
from robustjax import models
from robustjax.models import pretrained
from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data import registry
from robustjax import checkpoint
from robustjax.train import eval_lib
from robustjax.train import metrics as metrics_lib
from robustjax.train import optim
from robustjax.train import state as state_lib

# A loss hook: (logits, labels, images) -> scalar loss.
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass
class Hooks:
  """Ways a compression method plugs into the one training loop.

  Attributes:
    model: module to train instead of the config's model.
    init_variables: variables to start from when there is no checkpoint.
    init_masks: params -> pruning masks (stored in `TrainState.masks`).
    wrap_tx: wraps the config's optax transformation (e.g. pruning).
    loss_fn: replaces cross-entropy (e.g. knowledge distillation).
    post_update: jittable `TrainState -> TrainState` run after every update
      (e.g. a gradual pruning schedule updating the masks).
  """
  model: Any = None
  init_variables: Any = None
  init_masks: Optional[Callable[[Any], Any]] = None
  wrap_tx: Optional[Callable[[optax.GradientTransformation],
                             optax.GradientTransformation]] = None
  loss_fn: Optional[LossFn] = None
  post_update: Optional[Callable[[state_lib.TrainState],
                                 state_lib.TrainState]] = None


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                label_smoothing) if label_smoothing else \
      jax.nn.one_hot(labels, num_classes)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def apply_masks(params, masks):
  """params * masks on the masked leaves (masks may hold None leaves)."""
  if masks is None:
    return params
  return jax.tree.map(lambda p, m: p if m is None else p * m.astype(p.dtype),
                      params, masks, is_leaf=lambda x: x is None)


def train_step(state, images, labels, *, model, tx, loss_fn, crop_padding,
               flip, post_update):
  """One optimizer update; returns (new_state, metrics)."""
  rng = jax.random.fold_in(state.rng, state.step)
  x = pipeline.augment(pipeline.to_float(images), rng, crop_padding, flip)

  def loss_and_aux(params):
    logits, new_vars = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])
    return loss_fn(logits, labels, x), (logits, new_vars["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_and_aux, has_aux=True)(state.params)
  if state.masks is not None and isinstance(
      tx, optax.GradientTransformationExtraArgs):
    # Pruning (compress.pruning.wrap_optax) reads the current masks.
    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   masks=state.masks)
  else:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = apply_masks(optax.apply_updates(state.params, updates), state.masks)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  if post_update is not None:
    new_state = post_update(new_state)
  # The loss was computed before this update: also check the updated params,
  # so a non-finite update is caught before it can be checkpointed.
  finite = jnp.isfinite(loss)
  for p in jax.tree.leaves(new_state.params):
    finite &= jnp.all(jnp.isfinite(p))
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
             "finite": finite.astype(jnp.float32)}
  return new_state, metrics


def total_steps(config, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


def load_data(config: ml_collections.ConfigDict):
  """Returns (train split, {eval name: split}) for a config."""
  d = config.dataset
  kw = dict(image_size=d.image_size, data_dir=d.data_dir or None,
            manual_dir=d.manual_dir or None)
  cap = lambda n: None if n < 0 else n  # pylint: disable=g-long-lambda
  spec = registry.get_spec(d.name)
  source = d.source or spec.domains[0]
  train = registry.load_split(d.name, source, d.train_split,
                              max_examples=cap(d.max_train_examples), **kw)
  evals = {"test": registry.load_split(d.name, source, d.test_split,
                                       max_examples=cap(d.max_eval_examples),
                                       **kw)}
  for target in d.targets:
    evals[f"target/{target}"] = registry.load_split(
        d.name, target, d.target_split, max_examples=cap(d.max_eval_examples),
        **kw)
  return train, evals


def build_model(config, num_classes: Optional[int] = None):
  """The config's model, with the dataset's normalisation statistics."""
  spec = registry.get_spec(config.dataset.name)
  return models.get_model(
      config.model.name, num_classes=num_classes or spec.num_classes,
      width=config.model.width, mean=spec.mean, std=spec.std,
      dtype=jnp.bfloat16 if config.model.half_precision else jnp.float32)


def init_variables(model, config, rng):
  """Fresh variables for `model` at the config's image size."""
  spec = registry.get_spec(config.dataset.name)
  shape = (1, config.dataset.image_size, config.dataset.image_size,
           spec.channels)
  # Eager, not jitted: XLA:CPU needs 5-10 s to compile a ResNet's init,
  # while eager op-by-op init is fast once its ops are cached (same values).
  variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=False)
  variables = flax.core.unfreeze(variables)
  if config.model.init:
    variables = pretrained.load_into(config.model.init, variables)
  return variables


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Optional[Hooks] = None) -> state_lib.TrainState:
  """Trains (or resumes training of) a model and evaluates it periodically.

  Args:
    config: an experiment config (see configs/common.py for every field).
    workdir: where checkpoints, `config.json`, `metrics.jsonl`, TensorBoard
      summaries and `final_metrics.json` go; an existing run there resumes.
    hooks: optional compression hooks (pruning masks, distillation loss).

  Returns:
    The final `TrainState`.

  Raises:
    FloatingPointError: if the loss becomes NaN/Inf (the last good checkpoint
      is kept).
  """
  hooks = hooks or Hooks()
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  logging.info("Devices: %d x %s (%d processes); data-parallel mesh %s.",
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), dict(mesh.shape))
  if parallel.is_main_process():
    io.write_atomic(os.path.join(workdir, "config.json"),
                          config.to_json_best_effort(indent=2))

  train_split, eval_splits = load_data(config)
  batches = pipeline.TrainBatches(train_split, config.batch_size, config.seed,
                                  jax.process_index(), jax.process_count())
  num_steps = total_steps(config, batches.steps_per_epoch)
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                else batches.steps_per_epoch)

  model = hooks.model or build_model(config)
  tx = optim.make(config.optimizer, num_steps)
  if hooks.wrap_tx is not None:
    tx = hooks.wrap_tx(tx)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)

  def make_state():
    variables = hooks.init_variables
    if variables is None:
      variables = init_variables(model, config, init_rng)
    params = variables["params"]
    masks = hooks.init_masks(params) if hooks.init_masks else None
    return state_lib.create(apply_masks(params, masks),
                            variables.get("batch_stats", {}), tx, state_rng,
                            masks)

  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  state = parallel.replicate(mesh, make_state())
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(checkpoint.abstract(state))
    logging.info("Resuming from checkpoint at step %d in %s.", start,
                 ckpt.directory)
  start = int(state.step)
  logging.info("Training %s on %s (%d examples) for %d steps (%d per epoch) "
               "from step %d.", config.model.name, train_split.name,
               len(train_split), num_steps, batches.steps_per_epoch, start)

  loss_fn = hooks.loss_fn or functools.partial(
      lambda lg, lb, x, s: cross_entropy(lg, lb, s),
      s=config.label_smoothing)
  step_fn = jax.jit(
      functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn,
                        crop_padding=config.dataset.crop_padding,
                        flip=config.dataset.flip,
                        post_update=hooks.post_update),
      out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
      donate_argnums=0)
  apply_fn = models.inference_fn(model)
  writer = metrics_lib.MetricWriter(workdir)

  def evaluate(step):
    results = {name: eval_lib.accuracy(apply_fn, state.variables, split,
                                       config.eval_batch_size, mesh)
               for name, split in eval_splits.items()}
    writer.write(step, "eval", **{f"{k}_accuracy": v
                                  for k, v in results.items()})
    logging.info("Step %d eval: %s", step, ", ".join(
        f"{k} {v:.2%}" for k, v in results.items()))
    return results

  def check_finite(pending, step):
    if pending and float(np.min([m["finite"] for m in pending])) < 1.0:
      last = ckpt.latest_step()
      kept = (f"the last good checkpoint (step {last}) is intact in "
              f"{ckpt.directory}" if last is not None else
              "no checkpoint had been written yet")
      raise FloatingPointError(
          f"The training loss or parameters became NaN/Inf before step "
          f"{step}. Stopped without saving; {kept}. Lower "
          "config.optimizer.learning_rate or set "
          "config.optimizer.grad_clip_norm, then use a fresh --workdir (or "
          "rerun here to retry from that checkpoint).")

  pending, t0, t_steps = [], time.time(), 0
  results = None
  for step in range(start + 1, num_steps + 1):
    images, labels = batches.batch(step - 1)
    images, labels = parallel.shard_batch(mesh, images, labels)
    state, m = step_fn(state, images, labels)
    pending.append(m)
    t_steps += 1
    last = step == num_steps
    if step % config.log_every_steps == 0 or last:
      pending = jax.device_get(pending)
      check_finite(pending, step)
      elapsed = time.time() - t0
      mean = {k: float(np.mean([p[k] for p in pending])) for k in ("loss",
                                                                 "accuracy")}
      rate = t_steps * config.batch_size / max(elapsed, 1e-9)
      writer.write(step, "train", images_per_sec=rate,
                   epoch=step / batches.steps_per_epoch, **mean)
      logging.info("Step %d/%d: loss %.4f, train acc %.2f%%, %.0f img/s.",
                   step, num_steps, mean["loss"], 100 * mean["accuracy"],
                   rate)
      pending, t0, t_steps = [], time.time(), 0
    if step % eval_every == 0 or last:
      results = evaluate(step)
    if step % config.checkpoint_every_steps == 0 or last:
      check_finite(jax.device_get(pending), step)
      ckpt.save(step, state)
  if results is None:  # Resumed after the last step: evaluate once more.
    results = evaluate(num_steps)
  writer.close()
  ckpt.close()
  if parallel.is_main_process():
    io.write_json(os.path.join(workdir, "final_metrics.json"),
                        {"step": int(state.step), **{f"{k}_accuracy": v for
                                                     k, v in results.items()}})
  return state
