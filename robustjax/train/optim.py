"""Optimizers and learning-rate schedules from `config.optimizer`."""

import flax
import optax


def schedule(cfg, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: warm-up then cosine / constant / step decay."""
  lr, warmup = cfg.learning_rate, min(cfg.warmup_steps, total_steps)
  if cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "step":  # /10 at 50% and 75% of training.
    rest = max(total_steps - warmup, 1)
    main = optax.piecewise_constant_schedule(
        lr, {int(rest * 0.5): 0.1, int(rest * 0.75): 0.1})
  else:
    raise ValueError(f"Unknown optimizer.schedule {cfg.schedule!r}; use "
                     "cosine, constant or step.")
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(params):
  """Weight decay applies to conv/dense kernels only (not biases, not BN)."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: k[-1] == "kernel" for k in flat})


def make(cfg, total_steps: int) -> optax.GradientTransformation:
  """Builds the optimizer named by `cfg.name` with its schedule.

  Args:
    cfg: `config.optimizer`.
    total_steps: training length, for the schedule.

  Returns:
    An optax transformation (plain; pruning wraps it, see compress.pruning).
  """
  sched = schedule(cfg, total_steps)
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == "sgd":
    if cfg.weight_decay:
      chain.append(optax.add_decayed_weights(cfg.weight_decay, decay_mask))
    chain.append(optax.sgd(sched, momentum=cfg.momentum or None,
                           nesterov=cfg.nesterov))
  elif cfg.name == "adam":
    if cfg.weight_decay:
      chain.append(optax.add_decayed_weights(cfg.weight_decay, decay_mask))
    chain.append(optax.adam(sched, b1=cfg.momentum))
  elif cfg.name == "adamw":
    chain.append(optax.adamw(sched, b1=cfg.momentum,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
  else:
    raise ValueError(f"Unknown optimizer.name {cfg.name!r}; use sgd, adam or "
                     "adamw.")
  return optax.chain(*chain)
