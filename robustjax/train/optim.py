"""Optimizers and learning-rate schedules from `config.optimizer`."""

from typing import Union

import flax
import jax
import jax.numpy as jnp
import optax


def schedule(cfg, total_steps: Union[int, jax.Array]) -> optax.Schedule:
  """Learning-rate schedule: warm-up then cosine / constant / step decay.

  `total_steps` may be a traced integer (`scale_by_learning_rate` passes
  the one the train step receives), so trainings of different lengths share one
  compiled step. The arithmetic is optax's (`cosine_decay_schedule`,
  `linear_schedule`, `piecewise_constant_schedule`, `join_schedules`) in
  the form XLA gives it when the count is a constant: a division by the
  count becomes a multiplication by its reciprocal, and in the cosine
  `pi * t / T` becomes `t * (pi * (1 / T))`; so a traced count gives the
  very same learning rates on XLA:CPU (pinned bit for bit against optax,
  vmapped and not, in tests/train/optim_test.py; other backends may fold
  the constant form differently, by an ulp).
  """
  lr = cfg.learning_rate
  traced = isinstance(total_steps, jax.Array)
  if traced:
    total = jnp.asarray(total_steps, jnp.int32)
    warmup = jnp.minimum(jnp.int32(cfg.warmup_steps), total)
    rest = jnp.maximum(total - warmup, 1)
  else:
    warmup = min(cfg.warmup_steps, total_steps)
    rest = max(total_steps - warmup, 1)

  if cfg.schedule == "cosine":
    def main(count):
      decay = jnp.asarray(rest, jnp.float32)
      count = jnp.minimum(count, decay)
      return lr * (0.5 * (1 + jnp.cos(count * (jnp.pi * (1.0 / decay)))))
  elif cfg.schedule == "constant":
    main = lambda count: lr
  elif cfg.schedule == "step":  # /10 at 50% and 75% of training.
    if traced:
      bounds = [(rest * 0.5).astype(jnp.int32), (rest * 0.75).astype(jnp.int32)]
    else:
      bounds = [int(rest * 0.5), int(rest * 0.75)]

    def main(count):
      v = lr
      for i, b in enumerate(bounds):
        indicator = jnp.maximum(0.0, jnp.sign(b - count))
        scaled = v * indicator + (1 - indicator) * 0.1 * v
        # optax's dict of boundaries holds two equal ones once.
        v = scaled if i == 0 else jnp.where(b == bounds[0], v, scaled)
      return v
  else:
    raise ValueError(f"Unknown optimizer.schedule {cfg.schedule!r}; use "
                     "cosine, constant or step.")
  if not traced and not warmup:
    return main

  def warm(count):  # optax.linear_schedule(0, lr, warmup).
    steps = jnp.maximum(jnp.asarray(warmup, jnp.float32), 1.0)
    frac = 1 - jnp.clip(count, 0, steps) * (1.0 / steps)
    return (0.0 - lr) * frac + lr

  def joined(count):
    return jnp.where(count < warmup, warm(count), main(count - warmup))

  return joined


def scale_by_learning_rate(cfg, total_steps: int
                           ) -> optax.GradientTransformationExtraArgs:
  """optax.scale_by_learning_rate(schedule(cfg, ...)) with a traced length.

  `update(..., total_steps=n)` (an int32 scalar, from the train step) sets
  the schedule's length; without it, the `total_steps` given here. The
  state is optax's (`count`).
  """
  fixed = schedule(cfg, total_steps)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, total_steps=None, **extra):
    del params, extra
    sched = fixed if total_steps is None else schedule(cfg, total_steps)
    step_size = -1 * sched(state.count)
    updates = jax.tree.map(
        lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def decay_mask(params):
  """Weight decay applies to conv/dense kernels only (not biases, not BN)."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: k[-1] == "kernel" for k in flat})


def make(cfg, total_steps: int) -> optax.GradientTransformation:
  """Builds the optimizer named by `cfg.name` with its schedule.

  Args:
    cfg: `config.optimizer`.
    total_steps: training length, for the schedule; `update(...,
      total_steps=n)` overrides it with a traced count (the trainer does, so
      trainings of one model and method but different lengths share one
      compiled step).

  Returns:
    An optax transformation taking the extra argument `total_steps`
    (pruning wraps it, see compress.pruning).
  """
  scale_lr = scale_by_learning_rate(cfg, total_steps)
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  # optax.sgd / adam / adamw spelled out with `scale_lr` (same state layout).
  if cfg.name == "sgd":
    if cfg.weight_decay:
      chain.append(optax.add_decayed_weights(cfg.weight_decay, decay_mask))
    momentum = (optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov)
                if cfg.momentum else optax.identity())
    chain.append(optax.chain(momentum, scale_lr))
  elif cfg.name == "adam":
    if cfg.weight_decay:
      chain.append(optax.add_decayed_weights(cfg.weight_decay, decay_mask))
    chain.append(optax.chain(optax.scale_by_adam(b1=cfg.momentum), scale_lr))
  elif cfg.name == "adamw":
    chain.append(optax.chain(
        optax.scale_by_adam(b1=cfg.momentum),
        optax.add_decayed_weights(cfg.weight_decay, decay_mask), scale_lr))
  else:
    raise ValueError(f"Unknown optimizer.name {cfg.name!r}; use sgd, adam or "
                     "adamw.")
  return optax.chain(*chain)
