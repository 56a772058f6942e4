"""Tests for robustjax.compress.pruning.

  python -m pytest tests/compress/pruning_test.py
"""

import functools
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import digits_resnet
from robustjax import models
from robustjax.compress import magnitude
from robustjax.compress import pruning
from robustjax.models import factory
from robustjax.train import trainer


@functools.cache
def _init(width, seed):
  model = models.get_model("resnet8", 10, width=width, mean=(0.5,),
                           std=(0.5,))
  variables = jax.jit(model.init)(jax.random.key(seed),
                                  jnp.zeros((1, 16, 16, 1)))
  return jax.device_get(flax.core.unfreeze(variables))


def _params(width=4, seed=0):
  """Fresh ResNet-8 variables (a copy: tests may not share arrays)."""
  return jax.tree.map(np.array, _init(width, seed))


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _prunable_counts(params, masks):
  flags = _flat(pruning.prunable_tree(params))
  m = _flat(masks)
  n = sum(m[k].size for k in m if flags[k])
  pruned = sum(int(np.sum(~np.asarray(m[k]))) for k in m if flags[k])
  return n, pruned


def _momentum(opt_state):
  """The momentum trace (optax TraceState.trace) inside an optimizer state."""
  found = [s.trace for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.TraceState))
           if isinstance(s, optax.TraceState)]
  assert len(found) == 1, found
  return found[0]


class MasksTest(parameterized.TestCase):

  @parameterized.product(sparsity=(0.0, 0.3, 0.5, 0.9, 0.95, 1.0),
                         jit=(False, True))
  def test_global_exact_count(self, sparsity, jit):
    params = _params()["params"]
    fn = lambda p, s: pruning.magnitude_masks(p, s, scope="global")
    masks = (jax.jit(fn)(params, sparsity) if jit
             else fn(params, sparsity))
    n, pruned = _prunable_counts(params, masks)
    self.assertEqual(pruned, int(np.floor(sparsity * n + 0.5)))
    # Global: every kept weight is at least as large as every pruned one.
    flags = _flat(pruning.prunable_tree(params))
    p, m = _flat(params), _flat(masks)
    kept = np.concatenate([np.abs(p[k])[m[k]].ravel() for k in p if flags[k]])
    gone = np.concatenate([np.abs(p[k])[~m[k]].ravel() for k in p
                           if flags[k]])
    if kept.size and gone.size:
      self.assertGreaterEqual(kept.min(), gone.max())

  def test_one_program_for_every_sparsity(self):
    """Eager calls run one jitted program per model, whatever the sparsity."""
    params = _params()["params"]
    magnitude._masks.clear_cache()  # pylint: disable=protected-access
    for sparsity in (0.3, 0.6, 0.9):
      masks = pruning.magnitude_masks(params, sparsity)
      n, pruned = _prunable_counts(params, masks)
      self.assertEqual(pruned, int(np.floor(sparsity * n + 0.5)))
    self.assertEqual(magnitude._masks._cache_size(), 1)  # pylint: disable=protected-access
    # The same masks as when the whole computation is traced.
    traced = jax.jit(lambda p: pruning.magnitude_masks(p, 0.9))(params)
    jax.tree.map(np.testing.assert_array_equal, masks, traced)

  @parameterized.parameters(0.25, 0.5, 0.8, 0.9)
  def test_layerwise_exact_count_per_layer(self, sparsity):
    params = _params()["params"]
    masks = pruning.magnitude_masks(params, sparsity, scope="layerwise")
    flags = _flat(pruning.prunable_tree(params))
    for k, m in _flat(masks).items():
      m = np.asarray(m)
      expected = int(np.floor(sparsity * m.size + 0.5)) if flags[k] else 0
      self.assertEqual(int(np.sum(~m)), expected, k)

  @parameterized.parameters("global", "layerwise")
  def test_ties_still_exact(self, scope):
    # Every weight has the same magnitude: only the stable order decides.
    params = jax.tree.map(jnp.ones_like, _params()["params"])
    masks = pruning.magnitude_masks(params, 0.6, scope=scope)
    n, pruned = _prunable_counts(params, masks)
    if scope == "global":
      self.assertEqual(pruned, int(np.floor(0.6 * n + 0.5)))
    else:
      flags = _flat(pruning.prunable_tree(params))
      self.assertEqual(pruned, sum(int(np.floor(0.6 * m.size + 0.5))
                                   for k, m in _flat(masks).items()
                                   if flags[k]))

  def test_biases_bn_first_last_untouched_by_default(self):
    params = _params()["params"]
    masks = pruning.magnitude_masks(params, 0.9)
    for k, m in _flat(masks).items():
      if not k.endswith("kernel") or k.startswith(("conv_init", "head")):
        self.assertTrue(np.all(np.asarray(m)), k)
    # And configurable:
    masks = pruning.magnitude_masks(
        params, 0.9, scope="layerwise",
        prunable=pruning.default_prunable(prune_first=True, prune_last=True))
    self.assertFalse(np.all(np.asarray(masks["conv_init"]["kernel"])))
    self.assertFalse(np.all(np.asarray(masks["head"]["kernel"])))
    self.assertTrue(np.all(np.asarray(masks["head"]["bias"])))

  @parameterized.product(scope=("global", "layerwise"), norm=("l1", "l2"))
  def test_channel_pruning_removes_whole_filters(self, scope, norm):
    params = _params(width=8)["params"]
    masks = pruning.magnitude_masks(params, 0.5, scope=scope,
                                    structure="channel", norm=norm)
    flags = _flat(pruning.prunable_tree(params))
    total_filters, removed = 0, 0
    for k, m in _flat(masks).items():
      if not flags[k]:
        continue
      per = np.asarray(m).reshape(-1, m.shape[-1])
      # Each output channel is entirely kept or entirely removed.
      self.assertTrue(np.all(per.all(0) | ~per.any(0)), k)
      total_filters += per.shape[1]
      removed += int(np.sum(~per.any(0)))
      if scope == "layerwise":
        self.assertEqual(int(np.sum(~per.any(0))),
                         int(np.floor(0.5 * per.shape[1] + 0.5)))
    self.assertEqual(removed, int(np.floor(0.5 * total_filters + 0.5)))
    # The removed filters are the lowest-norm ones of their layer.
    w = np.asarray(params["stage3_block1"]["conv2"]["kernel"]).reshape(
        -1, 32)
    score = (np.abs(w).sum(0) if norm == "l1" else np.sqrt((w * w).sum(0)))
    keep = np.asarray(masks["stage3_block1"]["conv2"]["kernel"]).reshape(
        -1, 32).all(0)
    if keep.any() and (~keep).any():
      self.assertGreaterEqual(score[keep].min(), score[~keep].max())

  def test_layerwise_channel_keeps_one_filter(self):
    params = _params()["params"]
    masks = pruning.magnitude_masks(params, 1.0, scope="layerwise",
                                    structure="channel")
    k = np.asarray(masks["stage1_block1"]["conv1"]["kernel"]).reshape(-1, 4)
    self.assertEqual(int(k.all(0).sum()), 1)

  def test_prev_masks_are_monotone(self):
    params = _params()["params"]
    m1 = pruning.magnitude_masks(params, 0.5)
    # Perturb the kept weights so a fresh ranking would differ.
    pruned = pruning.apply_masks(params, m1)
    noisy = jax.tree.map(lambda p: p * 0.01, pruned)
    m2 = pruning.magnitude_masks(noisy, 0.7, prev_masks=m1)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2)):
      self.assertFalse(np.any(np.asarray(b) & ~np.asarray(a)))

  def test_polynomial_schedule(self):
    sched = pruning.polynomial_schedule(0.9, begin_step=10, end_step=110)
    self.assertAlmostEqual(float(sched(0)), 0.0)
    self.assertAlmostEqual(float(sched(10)), 0.0)
    self.assertAlmostEqual(float(sched(60)), 0.9 * (1 - 0.5**3), places=6)
    self.assertAlmostEqual(float(sched(110)), 0.9, places=6)
    self.assertAlmostEqual(float(sched(500)), 0.9, places=6)

  def test_bad_arguments(self):
    params = _params()["params"]
    with self.assertRaisesRegex(ValueError, "global, layerwise"):
      pruning.magnitude_masks(params, 0.5, scope="per-block")
    with self.assertRaisesRegex(ValueError, "unstructured, channel"):
      pruning.magnitude_pruner(0.5, structure="nm")
    with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
      pruning.magnitude_masks(params, 1.5)

  def test_report(self):
    params = _params()["params"]
    masks = pruning.magnitude_masks(params, 0.75)
    report = pruning.sparsity_report(pruning.apply_masks(params, masks))
    n, pruned = _prunable_counts(params, masks)
    self.assertEqual(report["prunable_size"], n)
    self.assertEqual(report["prunable_zeros"], pruned)
    table = pruning.format_report(report)
    self.assertIn("stage1_block1/conv1/kernel", table)
    self.assertIn("prunable total", table)
    self.assertIn("bn_init/scale (kept)", table)


class WrapOptaxTest(absltest.TestCase):

  def test_zeros_stay_zero_with_momentum_and_weight_decay(self):
    params = _params()["params"]
    masks = pruning.magnitude_masks(params, 0.8, scope="layerwise")
    params = pruning.apply_masks(params, masks)
    tx = pruning.wrap_optax(optax.chain(
        optax.add_decayed_weights(5e-2), optax.sgd(0.1, momentum=0.9,
                                                   nesterov=True)),
                            masks=masks)
    state = tx.init(params)

    @jax.jit
    def step(params, state, i):
      key = jax.random.fold_in(jax.random.key(1), i)
      grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state  # No re-masking.

    for i in range(5):
      params, state = step(params, state, i)
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
      self.assertTrue(np.all(np.asarray(p)[~np.asarray(m)] == 0.0))
    # No momentum built up on pruned weights either.
    trace = _momentum(state)
    for t, m in zip(jax.tree.leaves(trace), jax.tree.leaves(masks)):
      self.assertTrue(np.all(np.asarray(t)[~np.asarray(m)] == 0.0))
      self.assertTrue(np.any(np.asarray(t)[np.asarray(m)] != 0.0))

  def test_needs_one_mask_source(self):
    with self.assertRaisesRegex(ValueError, "exactly one"):
      pruning.wrap_optax(optax.sgd(0.1))
    params = {"w": jnp.ones((2, 2))}
    static = pruning.wrap_optax(optax.sgd(0.1),
                                masks={"w": jnp.eye(2, dtype=bool)})
    updates, state = static.update(params, static.init(params), params)
    # Kept weights get the SGD update; pruned ones -w, i.e. exactly zero after.
    np.testing.assert_allclose(updates["w"], np.where(
        np.eye(2, dtype=bool), -0.1, -1.0), rtol=1e-6)
    np.testing.assert_array_equal(pruning.masks_of(state)["w"],
                                  np.eye(2, dtype=bool))
    self.assertEqual(int(state.count), 1)

  def test_unmasked_start_is_zeroed_at_the_first_step(self):
    params = _params()["params"]
    tx = pruning.magnitude_pruner(0.5).wrap_tx(optax.sgd(0.01))
    state = tx.init(params)
    masks = pruning.masks_of(state)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for p, m in zip(jax.tree.leaves(new), jax.tree.leaves(masks)):
      self.assertTrue(np.all(np.asarray(p)[~np.asarray(m)] == 0.0))


class FineTuneTest(parameterized.TestCase):
  """Pruning through the trainer (momentum 0.9 + weight decay 5e-4)."""

  @parameterized.parameters("oneshot", "gradual")
  def test_finetune_keeps_zeros_and_reaches_target(self, schedule):
    config = digits_resnet.get_config("model=resnet8,width=4,runlocal")
    self.assertGreater(config.optimizer.momentum, 0)
    self.assertGreater(config.optimizer.weight_decay, 0)
    model = factory.build_model(config)
    base = factory.init_variables(model, config, jax.random.key(3))
    pruner = pruning.magnitude_pruner(0.75, schedule=schedule, begin_step=0,
                                      end_step=6, update_every=2)
    with tempfile.TemporaryDirectory() as workdir:
      state = trainer.train_and_evaluate(config, workdir, trainer.Recipe(
          init_variables=pruner.prepare(base), wrap_tx=pruner.wrap_tx))
    masks = pruning.masks_of(state.opt_state)
    n, pruned = _prunable_counts(base["params"], masks)
    self.assertEqual(pruned, int(np.floor(0.75 * n + 0.5)))
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(masks)):
      self.assertTrue(np.all(np.asarray(p)[~np.asarray(m)] == 0.0))
    # Momentum traces are zero on pruned weights (masked gradients).
    trace = _momentum(state.opt_state)
    if schedule == "oneshot":
      for t, m in zip(jax.tree.leaves(trace), jax.tree.leaves(masks)):
        self.assertTrue(np.all(np.asarray(t)[~np.asarray(m)] == 0.0))
    # Biases / BatchNorm were trained, not pruned.
    self.assertFalse(np.allclose(state.params["bn_init"]["scale"],
                                 base["params"]["bn_init"]["scale"]))
    self.assertTrue(np.all(np.asarray(state.params["bn_init"]["scale"])
                           != 0))


if __name__ == "__main__":
  absltest.main()
