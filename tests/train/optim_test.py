"""The optimizers' schedules with a traced length equal optax's, bit for bit."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from robustjax.train import optim


def _cfg(name="sgd", schedule="cosine", warmup=0, momentum=0.9):
  c = ml_collections.ConfigDict()
  c.name = name
  c.learning_rate = 0.1
  c.momentum = momentum
  c.nesterov = True
  c.weight_decay = 5e-4
  c.schedule = schedule
  c.warmup_steps = warmup
  c.grad_clip_norm = 0.0
  return c


def _optax_schedule(cfg, total_steps):
  """The schedule as optax's own functions build it (the reference)."""
  lr, warmup = cfg.learning_rate, min(cfg.warmup_steps, total_steps)
  rest = max(total_steps - warmup, 1)
  if cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, rest)
  elif cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  else:
    main = optax.piecewise_constant_schedule(
        lr, {int(rest * 0.5): 0.1, int(rest * 0.75): 0.1})
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _step_sizes(tx_update, counts, total=None):
  """-learning rate at each count, as the update multiplies a gradient."""
  def one(count):
    state = optax.ScaleByScheduleState(count=count)
    kw = {} if total is None else {"total_steps": total}
    updates, _ = tx_update(jnp.ones((), jnp.float32), state, **kw)
    return updates
  return np.asarray(jax.jit(jax.vmap(one))(counts))


class ScheduleTest(parameterized.TestCase):

  @parameterized.parameters(
      itertools.product(("cosine", "constant", "step"), (0, 3, 500)))
  def test_traced_length_matches_optax(self, schedule, warmup):
    cfg = _cfg(schedule=schedule, warmup=warmup)
    for total in (1, 2, 3, 7, 50, 79, 313, 1563):
      counts = jnp.arange(total + 3, dtype=jnp.int32)
      reference = optax.scale_by_learning_rate(_optax_schedule(cfg, total))
      want = _step_sizes(reference.update, counts)
      # One transformation built for another length, told the real one.
      tx = optim.scale_by_learning_rate(cfg, 1000)
      got = _step_sizes(tx.update, counts, jnp.int32(total))
      np.testing.assert_array_equal(got, want, err_msg=f"total {total}")
      # Without the extra argument: the length it was built with.
      fixed = optim.scale_by_learning_rate(cfg, total)
      np.testing.assert_array_equal(_step_sizes(fixed.update, counts), want,
                                    err_msg=f"total {total} (fixed)")

  def test_scalar_step_matches_optax(self):
    """The train step computes one learning rate (no vmap)."""
    cfg = _cfg()
    tx = optim.scale_by_learning_rate(cfg, 10)
    update = jax.jit(lambda c, t: tx.update(
        jnp.ones(()), optax.ScaleByScheduleState(count=c), total_steps=t)[0])
    for total in (79, 1563):
      reference = jax.jit(lambda c, total=total: optax.scale_by_learning_rate(
          _optax_schedule(cfg, total)).update(
              jnp.ones(()), optax.ScaleByScheduleState(count=c))[0])
      for count in range(0, total + 2, max(1, total // 97)):
        c = jnp.int32(count)
        self.assertEqual(float(update(c, jnp.int32(total))),
                         float(reference(c)), f"{total} {count}")

  @parameterized.parameters("sgd", "adam", "adamw")
  def test_state_layout_is_optax(self, name):
    """Checkpoints written with optax's optimizers restore unchanged."""
    cfg = _cfg(name=name)
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4))},
              "bn": {"scale": jnp.ones((4,))}}
    sched = _optax_schedule(cfg, 100)
    decay = optax.add_decayed_weights(cfg.weight_decay, optim.decay_mask)
    reference = {
        "sgd": lambda: optax.chain(decay, optax.sgd(
            sched, momentum=cfg.momentum, nesterov=cfg.nesterov)),
        "adam": lambda: optax.chain(decay, optax.adam(sched, b1=cfg.momentum)),
        "adamw": lambda: optax.chain(optax.adamw(
            sched, b1=cfg.momentum, weight_decay=cfg.weight_decay,
            mask=optim.decay_mask)),
    }[name]()
    ours = optim.make(cfg, 100)
    self.assertEqual(jax.tree.structure(ours.init(params)),
                     jax.tree.structure(reference.init(params)))
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    want, _ = reference.update(grads, reference.init(params), params)
    got, _ = ours.update(grads, ours.init(params), params,
                         total_steps=jnp.int32(100))
    jax.tree.map(np.testing.assert_array_equal, got, want)

  def test_unknown_schedule(self):
    with self.assertRaisesRegex(ValueError, "cosine, constant or step"):
      optim.schedule(_cfg(schedule="linear"), 10)


if __name__ == "__main__":
  absltest.main()
