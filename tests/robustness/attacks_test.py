"""Tests for robustjax.robustness.attacks and the attack evaluator's drivers.

The models are tiny Flax CNNs with BatchNorm trained for a few hundred steps
on 8x8 UCI digits (`sklearn.datasets.load_digits`), so "trained model"
properties run in seconds on a CPU. Run:

  python -m pytest tests/robustness/attacks_test.py
"""

import functools
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

from robustjax import parallel
from robustjax.robustness import attack_steps
from robustjax.robustness import attacks
from robustjax.robustness.evaluators import attack as attack_eval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
N_TEST = 200  # Not a multiple of the chunk sizes below: tests the remainder.
EPS_GRID = (0.0, 0.05, 0.1, 0.2, 0.3)


def _ste(x, q):
  """Straight-through estimator: forward q, backward identity."""
  return x + jax.lax.stop_gradient(q - x)


class TinyCNN(nn.Module):
  """Conv-BN-ReLU x2, global pool, dense. Optional fake quantization.

  Attributes:
    act_bits: if set, quantize the input to 8 bits and activations to
      `act_bits` bits in [0, 4].
    straight_through: quantize with a straight-through estimator; False
      rounds with a zero gradient (gradient masking).
  """
  act_bits: int = 0
  straight_through: bool = True

  def _quantize(self, x, levels, top):
    q = jnp.round(jnp.clip(x, 0.0, top) * (levels / top)) * (top / levels)
    return _ste(x, q) if self.straight_through else q

  @nn.compact
  def __call__(self, x, train=False):
    if self.act_bits:
      x = self._quantize(x, 255, 1.0)
    x = (x - 0.3) / 0.4
    for features, strides in ((16, 1), (32, 2)):
      x = nn.Conv(features, (3, 3), strides, use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
      if self.act_bits:
        x = self._quantize(x, 2**self.act_bits - 1, 4.0)
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


@functools.cache
def _digits():
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
  perm = np.random.default_rng(0).permutation(len(x))
  x, y = x[perm], y[perm].astype(np.int32)
  return (x[N_TEST:], y[N_TEST:]), (jnp.asarray(x[:N_TEST]),
                                    jnp.asarray(y[:N_TEST]))


@functools.cache
def _trained():
  """A TinyCNN trained on digits; returns (module, variables)."""
  (x, y), _ = _digits()
  model = TinyCNN()
  variables = model.init(jax.random.key(0), x[:2])
  tx = optax.adam(1e-2)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(variables, opt_state, xb, yb):
    def loss(params):
      logits, updates = model.apply(
          {**variables, "params": params}, xb, train=True,
          mutable=["batch_stats"])
      return optax.losses.softmax_cross_entropy_with_integer_labels(
          logits, yb).mean(), updates
    grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
    upd, opt_state = tx.update(grads, opt_state)
    params = optax.apply_updates(variables["params"], upd)
    return {"params": params, **updates}, opt_state

  rng = np.random.default_rng(1)
  for _ in range(300):
    idx = rng.integers(0, len(x), 64)
    variables, opt_state = step(variables, opt_state, x[idx], y[idx])
  return model, variables


@functools.cache
def _apply_fn(act_bits=0, straight_through=True):
  """Inference apply_fn; cached so the jit cache sees one object per model."""
  model = TinyCNN(act_bits=act_bits, straight_through=straight_through)
  return functools.partial(model.apply, train=False)


def _clean_accuracy(apply_fn, variables):
  """Plain forward-pass accuracy, as float32 correct / n like the library."""
  _, (x, y) = _digits()
  correct = np.sum(np.asarray(jnp.argmax(apply_fn(variables, x), -1) == y))
  return float(np.float32(correct) / np.float32(len(x)))


def _pruned(variables, fraction=0.6):
  """Zeroes the smallest-magnitude `fraction` of every kernel."""
  def prune(path, leaf):
    if path[-1].key != "kernel":
      return leaf
    threshold = jnp.quantile(jnp.abs(leaf), fraction)
    return jnp.where(jnp.abs(leaf) > threshold, leaf, 0.0)
  return jax.tree_util.tree_map_with_path(prune, variables)


def _int8_weights(variables):
  """Symmetric per-tensor int8 fake quantization of every kernel."""
  def quantize(path, leaf):
    if path[-1].key != "kernel":
      return leaf
    scale = jnp.max(jnp.abs(leaf)) / 127.0
    return jnp.round(leaf / scale) * scale
  return jax.tree_util.tree_map_with_path(quantize, variables)


def _assert_all_le(a, b):
  """Element-wise a <= b (exact: accuracies are multiples of 1 / n)."""
  a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
  if not np.all(a <= b):
    raise AssertionError(f"Not a <= b element-wise:\n a={a}\n b={b}")


ATTACK_CASES = (
    ("fgsm", dict()),
    ("pgd_linf", dict(steps=5)),
    ("pgd_l2", dict(steps=5)),
    ("pgd_linf", dict(steps=3, restarts=2, step_size=0.1)),
)


class AttacksTest(parameterized.TestCase):

  @parameterized.parameters(*ATTACK_CASES)
  def test_eps_zero_is_clean_exactly(self, name, kwargs):
    _, variables = _trained()
    apply_fn = _apply_fn()
    _, (x, y) = _digits()
    attack = attacks.get_attack(name, **kwargs)
    adv = jax.jit(attack.perturb, static_argnums=0)(
        apply_fn, variables, x, y, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(np.asarray(adv), np.asarray(x))
    accuracy = attack_eval.robust_accuracy(apply_fn, variables, x, y,
                                       jax.random.key(0), [0.0], attack)
    # Same as the plain forward pass, to the last bit.
    self.assertEqual(float(accuracy[0]), _clean_accuracy(apply_fn, variables))

  @parameterized.product(
      name=("fgsm", "pgd_linf", "pgd_l2"), steps=(1, 3),
      eps=(0.01, 0.1, 0.5, 2.0))
  def test_perturbation_within_ball_and_box(self, name, steps, eps):
    _, variables = _trained()
    _, (x, y) = _digits()
    # A large absolute step leaves the ball after every step unless projected.
    kwargs = {} if name == "fgsm" else dict(steps=steps, step_size=1.0)
    attack = attacks.get_attack(name, **kwargs)
    adv = np.asarray(attack.perturb(_apply_fn(), variables, x, y,
                                    jax.random.key(3), eps))
    delta = (adv - np.asarray(x)).reshape(len(adv), -1)
    self.assertGreaterEqual(adv.min(), 0.0)
    self.assertLessEqual(adv.max(), 1.0)
    if name == "pgd_l2":
      norms = np.linalg.norm(delta.astype(np.float64), axis=1)
    else:
      norms = np.abs(delta).max(axis=1)
    self.assertLessEqual(norms.max(), eps + 1e-6)
    self.assertGreater(norms.max(), 0.0)

  def test_pgd_below_fgsm_below_clean_and_falls_to_zero(self):
    _, variables = _trained()
    apply_fn = _apply_fn()
    _, (x, y) = _digits()
    key = jax.random.key(0)
    clean = _clean_accuracy(apply_fn, variables)
    self.assertGreater(clean, 0.9)  # The model is trained.
    grid = EPS_GRID + (0.5,)
    fgsm_acc = np.asarray(attack_eval.robust_accuracy(
        apply_fn, variables, x, y, key, grid, attacks.fgsm()))
    pgd_acc = np.asarray(attack_eval.robust_accuracy(
        apply_fn, variables, x, y, key, grid, attacks.pgd(steps=20)))
    self.assertEqual(fgsm_acc[0], clean)
    self.assertEqual(pgd_acc[0], clean)
    _assert_all_le(pgd_acc, fgsm_acc)
    _assert_all_le(fgsm_acc, clean)
    self.assertLess(pgd_acc[1], clean)
    self.assertLessEqual(pgd_acc[-1], 0.02)  # eps = 0.5 L-inf.
    # PGD accuracy decreases with eps (larger balls contain smaller ones).
    _assert_all_le(pgd_acc[1:], pgd_acc[:-1])

  def test_pgd_l2_falls_with_eps(self):
    _, variables = _trained()
    _, (x, y) = _digits()
    acc = np.asarray(attack_eval.robust_accuracy(
        _apply_fn(), variables, x, y, jax.random.key(0), (0.0, 0.5, 1.0, 3.0),
        attacks.pgd("l2", steps=20)))
    _assert_all_le(acc[1:], acc[:-1])
    self.assertLessEqual(acc[-1], 0.05)

  def test_one_trace_for_the_eps_grid_and_cached(self):
    _, variables = _trained()
    _, (x, y) = _digits()
    traces = []
    inner = attacks.pgd(steps=2)

    def counting_perturb(*args):
      traces.append(1)  # Python side effect: runs once per trace.
      return inner.perturb(*args)

    attack = attacks.Attack("counting", counting_perturb)
    for _ in range(2):
      acc = attack_eval.robust_accuracy(_apply_fn(), variables, x, y,
                                    jax.random.key(0), EPS_GRID, attack)
      self.assertEqual(acc.shape, (len(EPS_GRID),))
    self.assertLen(traces, 1)
    # A new factory call with equal settings hits the same compiled program.
    self.assertEqual(attacks.pgd(steps=2), inner)

  def test_restarts_never_increase_accuracy(self):
    _, variables = _trained()
    apply_fn = _apply_fn()
    _, (x, y) = _digits()
    key = jax.random.key(7)
    grid = (0.0, 0.05, 0.1, 0.15)
    acc = {r: np.asarray(attack_eval.robust_accuracy(
        apply_fn, variables, x, y, key, grid, attacks.pgd(steps=3, restarts=r)))
           for r in (1, 3)}
    _assert_all_le(acc[3], acc[1])
    self.assertEqual(acc[3][0], acc[1][0])
    # Per example: robust under 3 restarts implies robust under 1.
    correct = {}
    for r in (1, 3):
      adv = attacks.pgd(steps=3, restarts=r).perturb(
          apply_fn, variables, x, y, key, 0.1)
      correct[r] = np.asarray(jnp.argmax(apply_fn(variables, adv), -1) == y)
    self.assertFalse(np.any(correct[3] & ~correct[1]))

  @parameterized.parameters(("pgd_linf", 48), ("pgd_l2", 64), ("fgsm", 7))
  def test_chunked_equals_unchunked(self, name, chunk_size):
    _, variables = _trained()
    _, (x, y) = _digits()
    attack = attacks.get_attack(name)
    full, chunked = [np.asarray(attack_eval.robust_accuracy(
        _apply_fn(), variables, x, y, jax.random.key(1), EPS_GRID, attack,
        chunk_size=c)) for c in (None, chunk_size)]
    np.testing.assert_array_equal(full, chunked)

  @parameterized.parameters(
      ("fgsm", dict()),
      ("pgd_linf", dict(steps=3)),
      ("pgd_l2", dict(steps=3)),
      ("pgd_linf", dict(steps=2, random_start=False, step_size=0.02)),
      ("pgd_linf", dict(steps=2, restarts=2)),  # No staged form: one program.
  )
  def test_staged_equals_one_program(self, name, kwargs):
    _, variables = _trained()
    _, (x, y) = _digits()
    attack = attacks.get_attack(name, **kwargs)
    self.assertEqual(attacks.stages(attack) is None,
                     kwargs.get("restarts", 1) > 1)
    run = lambda staged: attack_eval.adversarial_images(
        _apply_fn(), variables, x, y, jax.random.key(3), EPS_GRID, attack,
        chunk_size=47, staged=staged)
    np.testing.assert_array_equal(run(True), run(False))
    # And it is `perturb` from the same per-example keys (another program,
    # not vmapped over eps: equal up to float rounding).
    keys = attacks.indexed_keys(jax.random.key(3), len(x))
    direct = jax.jit(attack.perturb, static_argnums=0)(
        _apply_fn(), variables, jnp.asarray(x, jnp.float32), y, keys, 0.1)
    np.testing.assert_allclose(run(True)[2], np.asarray(direct), rtol=0,
                               atol=1e-6)

  def test_staged_fgsm_and_pgd_linf_share_the_step_program(self):
    mesh = parallel.make_mesh()
    fgsm, pgd = (attacks.stages(attacks.get_attack(n)) for n in
                 ("fgsm", "pgd_linf"))
    self.assertEqual(pgd.steps, 10)
    self.assertEqual(fgsm.steps, 1)
    (s1, step1), (s2, step2) = (attack_eval._staged_programs(
        _apply_fn(), st, None, mesh) for st in (fgsm, pgd))
    self.assertIs(step1, step2)
    self.assertIsNot(s1, s2)
    l2 = attacks.stages(attacks.get_attack("pgd_l2"))
    self.assertIsNot(attack_eval._staged_programs(
        _apply_fn(), l2, None, mesh)[1], step1)

  def test_deterministic_given_key(self):
    _, variables = _trained()
    _, (x, y) = _digits()
    perturb = jax.jit(attacks.pgd(steps=2).perturb, static_argnums=0)
    run = lambda k: np.asarray(perturb(_apply_fn(), variables, x, y, k, 0.1))
    np.testing.assert_array_equal(run(jax.random.key(5)),
                                  run(jax.random.key(5)))
    self.assertFalse(np.array_equal(run(jax.random.key(5)),
                                    run(jax.random.key(6))))
    # Raw uint32 keys and per-example keys work too.
    raw = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(
        run(raw), run(jax.random.split(raw, len(x))))

  def test_unroll_and_fori_loop_agree(self):
    _, variables = _trained()
    _, (x, y) = _digits()
    accs = [np.asarray(attack_eval.robust_accuracy(
        _apply_fn(), variables, x, y, jax.random.key(2), (0.05, 0.1),
        attacks.pgd(steps=4, restarts=2, unroll=u))) for u in (True, False)]
    np.testing.assert_allclose(accs[0], accs[1], atol=0.011)

  def test_fgsm_matches_formula_on_linear_model(self):
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)), jnp.float32)
    apply_fn = lambda v, x: x.reshape(len(x), -1) @ v
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(5, 2, 2, 3)),
                    jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1])
    # d CE / d x = W (softmax - onehot).
    p = jax.nn.softmax(apply_fn(w, x))
    grad = ((p - jax.nn.one_hot(y, 3)) @ w.T).reshape(x.shape)
    expected = jnp.clip(x + 0.1 * jnp.sign(grad), 0.0, 1.0)
    adv = attacks.fgsm().perturb(apply_fn, w, x, y, None, 0.1)
    np.testing.assert_allclose(adv, expected, atol=1e-7)

  def test_per_example_eps(self):
    _, variables = _trained()
    _, (x, y) = _digits()
    eps = jnp.linspace(0.0, 0.2, len(x))
    adv = attacks.pgd(steps=2).perturb(_apply_fn(), variables, x, y,
                                       jax.random.key(0), eps)
    linf = np.abs(np.asarray(adv - x)).reshape(len(x), -1).max(1)
    self.assertTrue(np.all(linf <= np.asarray(eps) + 1e-6))
    np.testing.assert_array_equal(adv[0], x[0])

  def test_pruned_model(self):
    _, variables = _trained()
    pruned = _pruned(variables)
    kernels = [v for p, v in jax.tree_util.tree_leaves_with_path(pruned)
               if p[-1].key == "kernel"]
    self.assertGreater(np.mean([np.mean(k == 0) for k in kernels]), 0.55)
    apply_fn = _apply_fn()
    _, (x, y) = _digits()
    clean = _clean_accuracy(apply_fn, pruned)
    acc = np.asarray(attack_eval.robust_accuracy(
        apply_fn, pruned, x, y, jax.random.key(0), EPS_GRID,
        attacks.pgd(steps=10)))
    self.assertEqual(acc[0], clean)
    self.assertLess(acc[2], 0.5 * clean)

  def test_quantized_straight_through_model(self):
    _, variables = _trained()
    qvars = _int8_weights(variables)
    apply_fn = _apply_fn(act_bits=4)
    _, (x, y) = _digits()
    clean = _clean_accuracy(apply_fn, qvars)
    self.assertGreater(clean, 0.8)
    grad = attack_steps.input_gradient(apply_fn, qvars, x, y)
    self.assertGreater(float(jnp.mean(grad != 0)), 0.5)
    acc = np.asarray(attack_eval.robust_accuracy(
        apply_fn, qvars, x, y, jax.random.key(0), EPS_GRID,
        attacks.pgd(steps=10)))
    self.assertEqual(acc[0], clean)
    self.assertLess(acc[2], 0.5 * clean)
    # Without the straight-through estimator rounding kills the gradient: the
    # attack is blind (gradient masking), which is why quantized models in
    # this suite must use one.
    masked_fn = _apply_fn(act_bits=4, straight_through=False)
    grad = attack_steps.input_gradient(masked_fn, qvars, x, y)
    self.assertEqual(float(jnp.max(jnp.abs(grad))), 0.0)

  def test_two_cpu_devices_match_one(self):
    # XLA_FLAGS must be set before jax starts, hence a fresh process.
    code = textwrap.dedent("""
        import jax, numpy as np
        import attacks_test as t
        from robustjax import parallel
        from robustjax.robustness import attacks
        from robustjax.robustness.evaluators import attack as attack_eval
        assert jax.device_count() == 2, jax.devices()
        _, v = t._trained()
        _, (x, y) = t._digits()
        run = lambda **kw: np.asarray(attack_eval.robust_accuracy(
            t._apply_fn(), v, x, y, jax.random.key(0), t.EPS_GRID,
            attacks.pgd(steps=3), **kw))
        one = run(mesh=parallel.make_mesh(jax.devices()[:1]))
        np.testing.assert_array_equal(run(), one)
        np.testing.assert_array_equal(run(chunk_size=47), one)
        np.testing.assert_array_equal(run(chunk_size=47, staged=True), one)
        # Each device attacks its own examples: no collective in the program
        # (sharding propagation once all-gathered the batch in every step).
        mesh = parallel.make_mesh()
        program = attack_eval._perturb_program(t._apply_fn(), attacks.pgd(
            steps=3), None, mesh)
        args = parallel.replicate(mesh, (v, np.float32([0.1, 0.2])))
        batch = parallel.shard_batch(mesh, x[:8], y[:8], np.asarray(
            jax.random.key_data(jax.random.split(jax.random.key(0), 8))))
        text = program.lower(args, 0, *batch).compile().as_text()
        for op in ("all-gather", "all-reduce", "collective-permute",
                   "all-to-all"):
          assert op + "(" not in text, op
        """)
    env = dict(os.environ,
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join(
                   [ROOT, os.path.dirname(os.path.abspath(__file__))]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   timeout=600)

  def test_unknown_attack_name(self):
    with self.assertRaisesRegex(ValueError, "fgsm, pgd_l2, pgd_linf"):
      attacks.get_attack("cw")

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "norm"):
      attacks.pgd(norm="l1")
    with self.assertRaisesRegex(ValueError, "steps"):
      attacks.pgd(steps=0)
    _, (x, y) = _digits()
    with self.assertRaisesRegex(ValueError, "1-D"):
      attack_eval.robust_accuracy(_apply_fn(), {}, x, y, jax.random.key(0),
                              [[0.1]], attacks.fgsm())


if __name__ == "__main__":
  absltest.main()
