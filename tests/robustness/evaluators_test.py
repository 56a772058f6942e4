"""Tests for robustjax.robustness.evaluators (registry, cells, cache, loop).

The model is a tiny random-weight CNN on 16x16 synthetic images; 3 in 4
labels are its own clean predictions, so accuracies sit well inside (0, 1)
and corruptions and attacks flip examples. Run:

  python -m pytest tests/robustness/evaluators_test.py
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustjax import models
from robustjax.data.registry import Split
from robustjax.robustness import attacks
from robustjax.robustness import corruptions
from robustjax.robustness import evaluators
from robustjax.robustness.evaluators import attack as attack_eval
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import corruption
from robustjax.robustness.evaluators import transfer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SEED = 3
CALLS = []  # One entry per Python call of TinyNet, i.e. per trace.


class TinyNet(nn.Module):
  """Conv-BN-ReLU, strided conv, dense; counts its (traced) calls."""
  features: int = 8

  @nn.compact
  def __call__(self, x, train=False):
    CALLS.append(self.features)
    x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x)
    x = nn.relu(nn.Conv(16, (3, 3), (2, 2))(x))
    return nn.Dense(10)(x.reshape(len(x), -1))


def _variables(features=8, seed=0):
  return TinyNet(features).init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))


def _split(n, seed, name="test"):
  """Blocky random images; 3 in 4 labels are the seed-0 model's predictions."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 4, 4, 3)).repeat(4, 1).repeat(4, 2)
  x = x.astype(np.uint8)
  pred = np.asarray(jnp.argmax(TinyNet().apply(_variables(), x / 255.0), -1))
  y = np.where(np.arange(n) % 4 == 0, rng.integers(0, 10, n), pred)
  return Split(x, y.astype(np.int32), name)


TEST = _split(44, 1)
TARGETS = {"other": _split(21, 2)}


def _evals():
  e = ml_collections.ConfigDict()
  e.clean = True
  e.domain = True
  e.batch_size = 16
  e.corruptions = ml_collections.ConfigDict(dict(
      names=("gaussian_noise", "shot_noise", "contrast"),
      severities=(1, 3, 5), table="cifar", max_examples=30))
  e.attacks = ml_collections.ConfigDict(dict(
      names=("fgsm", "pgd_linf"), eps=(0.0, 0.01, 0.05), steps=2,
      restarts=2, max_examples=20, chunk_size=8, staged=False))
  e.level_map = "auto"
  return e


_RESULTS = {}


def _results(features=8, seed=0):
  """{cell key: CellResult} of the model (cached: compiles dominate)."""
  if (features, seed) not in _RESULTS:
    cells = evaluators.build(_evals(), TEST, TARGETS, SEED)
    results = evaluators.evaluate(models.inference_fn(TinyNet(features)),
                                  _variables(features, seed), cells)
    _RESULTS[features, seed] = {c.key: r for c, r in zip(cells, results)}
  return _RESULTS[features, seed]


class RegistryTest(parameterized.TestCase):

  def test_registry_and_cells_without_a_model(self):
    # Keyed by shift; "dataset" reads another dataset's files as domain or
    # corruption shifts (dataset_evaluator_test.py).
    self.assertEqual(tuple(evaluators.EVALUATORS),
                     base.SHIFTS[:3] + ("dataset",) + base.SHIFTS[3:])
    cells = evaluators.build(_evals(), TEST, TARGETS, SEED)
    self.assertEqual([c.key for c in cells], [
        "clean/source", "domain/other", "corruption/gaussian_noise",
        "corruption/shot_noise", "corruption/contrast", "adversarial/fgsm",
        "adversarial/pgd_linf"])
    for c in cells:
      self.assertIsInstance(c, evaluators.EVALUATORS[c.shift])
    self.assertEqual([c.n for c in cells], [44, 21, 30, 30, 30, 20, 20])
    self.assertEqual(cells[0].levels, (None,))
    self.assertEqual(cells[2].levels, (1, 3, 5))
    self.assertEqual(cells[-1].levels, (0.0, 0.01, 0.05))
    self.assertEqual(cells[-1].attack, attacks.pgd(steps=2, restarts=2))

  def test_switches_and_all_examples(self):
    e = _evals()
    e.clean, e.domain = False, False
    e.corruptions.names = ()
    e.attacks.max_examples = -1
    cells = evaluators.build(e, TEST, TARGETS, SEED)
    self.assertEqual([(c.key, c.n) for c in cells],
                     [("adversarial/fgsm", 44), ("adversarial/pgd_linf", 44)])
    e.attacks.names = ()
    self.assertEqual(evaluators.build(e, None, {}, SEED), [])

  def test_a_preset_gives_the_cells_of_its_corruptions(self):
    named = _evals()
    named.corruptions.names = corruptions.BENCHMARK
    preset = _evals()
    preset.corruptions.names = ("benchmark",)
    a = evaluators.build(named, TEST, TARGETS, SEED)
    b = evaluators.build(preset, TEST, TARGETS, SEED)
    self.assertEqual([c.key for c in a], [c.key for c in b])
    self.assertLen([c for c in b if c.shift == "corruption"], 15)
    for x, y in zip(a, b):
      if x.shift == "corruption":
        self.assertEqual((x.levels, x.n, x.table), (y.levels, y.n, y.table))
        np.testing.assert_array_equal(jax.random.key_data(x.rng),
                                      jax.random.key_data(y.rng))

  def test_cell_keys_depend_only_on_seed_and_cell(self):
    a = evaluators.build(_evals(), TEST, TARGETS, SEED)
    b = evaluators.build(_evals(), TEST, {}, SEED)
    c = evaluators.build(_evals(), TEST, TARGETS, SEED + 1)
    np.testing.assert_array_equal(a[2].rng, b[1].rng)
    self.assertFalse(np.array_equal(a[2].rng, c[2].rng))
    self.assertFalse(np.array_equal(a[2].rng, a[3].rng))


def _broken(path, value):
  """The evals block as a plain dict (no type locks) with one field set."""
  e = _evals().to_dict()
  *parents, last = path.split(".")
  block = e
  for p in parents:
    block = block[p]
  block[last] = value
  return e


class CheckTest(parameterized.TestCase):

  @parameterized.parameters(
      ("corruptions.names", ("rain",),
       r"^evals.corruptions.names names an unknown corruption 'rain'; valid "
       r"names: gaussian_noise, shot_noise, .*, saturate, or benchmark for "
       r"the 15 benchmark corruptions\.$"),
      ("corruptions.names", ("benchmark", "fog"), r"^evals.corruptions.names="
       r"\('benchmark', 'fog'\) lists 'fog' twice\.$"),
      ("corruptions.names", "fog",
       r"^evals.corruptions.names='fog' must be a tuple, e\.g\."),
      ("corruptions.names", ("fog", "fog"), "lists 'fog' twice"),
      ("corruptions.table", "tiny",
       r"^evals.corruptions.table='tiny' is not one of cifar, imagenet\.$"),
      ("corruptions.severities", (0, 3), r"=\(0, 3\) must hold severities "
       r"in 1\.\.5\.$"),
      ("corruptions.severities", (6,), "in 1..5"),
      ("corruptions.severities", (), "in 1..5"),
      ("corruptions.severities", 3, "must be a tuple"),
      ("corruptions.max_examples", 0,
       r"^evals.corruptions.max_examples=0 must be -1 \(all examples\) or a "
       r"positive number of examples\.$"),
      ("attacks.max_examples", -2, "max_examples=-2 must be -1"),
      ("attacks.names", ("cw",),
       r"unknown attack 'cw'; valid names: fgsm, pgd_l2, pgd_linf\.$"),
      ("attacks.names", "fgsm", "names='fgsm' must be a tuple"),
      ("attacks.eps", (0.0, -0.1), r"eps=\(0\.0, -0\.1\) must hold finite "
       r"budgets >= 0 in pixel units"),
      ("attacks.eps", (float("nan"),), "must hold finite budgets"),
      ("attacks.eps", (float("inf"),), "must hold finite budgets"),
      ("attacks.eps", "0.1", "eps='0.1' must be a tuple"),
      ("attacks.eps", (), "must hold finite budgets"),
      ("attacks.steps", 0,
       r"^evals.attacks.steps=0 must be a positive integer\.$"),
      ("attacks.restarts", -1, "restarts=-1 must be a positive integer"),
      ("attacks.chunk_size", 0, "chunk_size=0 must be a positive integer"),
      ("attacks.staged", "yes",
       r"^evals.attacks.staged='yes' must be True or False\.$"),
      ("batch_size", 0, "batch_size=0 must be a positive integer"),
      ("batch_size", 16.0, "batch_size=16.0 must be a positive integer"),
      ("level_map", "fast",
       r"^evals.level_map='fast' is not one of auto, map, vmap\.$"),
      ("clean", "yes", r"^evals.clean='yes' must be True or False\.$"),
      ("corruption", {}, r"^evals.corruption is not a field of the evals "
       r"block; valid fields: attacks, batch_size, clean, corruptions"),
      ("attacks.step", 3, r"^evals.attacks.step is not a field of "
       r"evals.attacks; valid fields: names, eps, steps"),
  )
  def test_bad_field_is_one_clear_sentence(self, path, value, message):
    evals = _broken(path, value)
    with self.assertRaisesRegex(ValueError, message):
      evaluators.check_evals(evals)
    # build fails the same way, before looking at the data.
    with self.assertRaisesRegex(ValueError, message):
      evaluators.build(evals, None, {}, SEED)

  def test_good_blocks_pass(self):
    evaluators.check_evals(_evals())
    evaluators.check_evals(_evals().to_dict())

  def test_missing_field_and_missing_split(self):
    e = _evals().to_dict()
    del e["attacks"]["chunk_size"]
    with self.assertRaisesRegex(ValueError, "evals.attacks.chunk_size is "
                                "missing"):
      evaluators.check_evals(e)
    with self.assertRaisesRegex(ValueError, "evals.clean needs a non-empty "
                                "split; got None"):
      evaluators.build(_evals(), None, {}, SEED)


class ResultsTest(parameterized.TestCase):

  def test_per_example_arrays_match_rows(self):
    cells = {c.key: c for c in evaluators.build(_evals(), TEST, TARGETS,
                                                SEED)}
    for key, result in _results().items():
      cell = cells[key]
      self.assertEqual(result.correct.dtype, np.bool_)
      self.assertEqual(result.correct.shape, (len(cell.levels), cell.n))
      self.assertLen(result.rows, len(cell.levels))
      for row, level, correct in zip(result.rows, cell.levels,
                                     result.correct):
        self.assertEqual(row, {"shift": cell.shift, "name": cell.name,
                               "level": level, "n": cell.n,
                               "accuracy": correct.mean()})
    # Not a degenerate model: shifts flip some examples, not all.
    acc = {k: r.correct.mean(1) for k, r in _results().items()}
    self.assertTrue(0.5 < acc["clean/source"][0] < 0.95, acc)
    self.assertLess(acc["adversarial/fgsm"][-1], acc["clean/source"][0])
    self.assertLess(acc["corruption/contrast"][-1], acc["clean/source"][0])

  def test_clean_and_domain_match_a_plain_forward_pass(self):
    fn = models.inference_fn(TinyNet())
    for key, split in (("clean/source", TEST),
                       ("domain/other", TARGETS["other"])):
      x = split.images.astype(np.float32) / np.float32(255)
      want = np.argmax(fn(_variables(), x), -1)
      np.testing.assert_array_equal(_results()[key].correct[0],
                                    want == split.labels, err_msg=key)
    self.assertEqual(
        evaluators.accuracy(fn, _variables(), TEST, 16),
        _results()["clean/source"].rows[0]["accuracy"])

  def test_eps_zero_is_the_clean_result_on_the_same_examples(self):
    clean = _results()["clean/source"].correct[0]
    for name in ("fgsm", "pgd_linf"):
      result = _results()[f"adversarial/{name}"]
      np.testing.assert_array_equal(result.correct[0], clean[:20])
      self.assertEqual(result.rows[0]["accuracy"], clean[:20].mean())

  def test_attack_matches_one_unchunked_perturb(self):
    fn = models.inference_fn(TinyNet())
    variables = _variables()
    cell = evaluators.build(_evals(), TEST, TARGETS, SEED)[-1]
    x = jnp.asarray(TEST.images[:20].astype(np.float32) / np.float32(255))
    y = jnp.asarray(TEST.labels[:20])
    keys = attacks.indexed_keys(cell.rng, 20)
    for i, eps in enumerate(cell.levels):
      adv = cell.attack.perturb(fn, variables, x, y, keys, eps)
      want = np.asarray(jnp.argmax(fn(variables, adv), -1) == y)
      np.testing.assert_array_equal(
          _results()["adversarial/pgd_linf"].correct[i], want, err_msg=eps)

  def test_robust_correct_options(self):
    fn = models.inference_fn(TinyNet())
    v = _variables()
    run = lambda key, **kw: attack_eval.robust_correct(
        fn, v, TEST.images, TEST.labels, key, (0.0, 0.03),
        attacks.pgd(steps=2, **kw), chunk_size=12)
    one = run(jax.random.PRNGKey(5))
    # Typed and raw keys give the same starts; chunking changes nothing.
    np.testing.assert_array_equal(run(jax.random.key(5)), one)
    np.testing.assert_array_equal(attack_eval.robust_correct(
        fn, v, TEST.images, TEST.labels, jax.random.PRNGKey(5), (0.0, 0.03),
        attacks.pgd(steps=2)), one)
    # More restarts keep the per-example worst case (restart 0 is shared).
    three = run(jax.random.PRNGKey(5), restarts=3)
    self.assertFalse(np.any(three & ~one))
    acc = attack_eval.robust_accuracy(fn, v, TEST.images, TEST.labels,
                                      jax.random.PRNGKey(5), (0.0, 0.03),
                                      attacks.pgd(steps=2), chunk_size=12)
    self.assertEqual(acc.dtype, jnp.float32)
    np.testing.assert_array_equal(acc, one.sum(1).astype(np.float32) /
                                  np.float32(44))

  def test_fused_corruption_equals_shared_cache(self):
    cells = [c for c in evaluators.build(_evals(), TEST, TARGETS, SEED)
             if c.shift == "corruption"]
    fn, v = models.inference_fn(TinyNet()), _variables()
    _results()
    store = corruption._CORRUPTED  # pylint: disable=protected-access
    before = dict(store)
    cached = [c.run(fn, v).correct for c in cells]
    # The cache held them already (from _results): nothing recomputed.
    self.assertEqual(store.keys(), before.keys())
    for k, images in before.items():
      self.assertIs(store[k], images)
    with mock.patch.object(corruption, "CORRUPTED_CACHE_BYTES", 0):
      fused = [c.run(fn, v).correct for c in cells]
    for c, a, b in zip(cells, cached, fused):
      np.testing.assert_array_equal(a, b, err_msg=c.key)
      np.testing.assert_array_equal(a, _results()[c.key].correct)


  def test_a_cache_too_small_for_every_cell_keeps_what_it_holds(self):
    # Every model walks the same cells in the same order: an LRU cache that
    # holds one of three corrupted splits would recompute all three per
    # model. Evicted splits run fused instead; the cached one stays.
    cells = [c for c in evaluators.build(_evals(), TEST, TARGETS, SEED + 1)
             if c.shift == "corruption"]
    fn, v = models.inference_fn(TinyNet()), _variables()
    split = cells[0].split
    one = len(cells[0].levels) * split.images[0].size * len(split.images) * 4
    saved_store = dict(corruption._CORRUPTED)  # pylint: disable=protected-access
    corruption._CORRUPTED.clear()  # pylint: disable=protected-access
    corruption._EVICTED.clear()  # pylint: disable=protected-access
    try:
      with mock.patch.object(corruption, "CORRUPTED_CACHE_BYTES", one), \
          mock.patch.object(corruption, "corrupted_images",
                            wraps=corruption.corrupted_images) as made:
        passes = [[c.run(fn, v).correct for c in cells] for _ in range(3)]
      self.assertEqual(made.call_count, len(cells))  # The first pass only.
      self.assertLen(corruption._CORRUPTED, 1)  # pylint: disable=protected-access
      for later in passes[1:]:
        for c, a, b in zip(cells, passes[0], later):
          np.testing.assert_array_equal(a, b, err_msg=c.key)
    finally:
      corruption._CORRUPTED.clear()  # pylint: disable=protected-access
      corruption._CORRUPTED.update(saved_store)  # pylint: disable=protected-access
      corruption._EVICTED.clear()  # pylint: disable=protected-access


class CompileOnceTest(absltest.TestCase):

  def test_equal_modules_share_the_function(self):
    self.assertIs(models.inference_fn(TinyNet(5)),
                  models.inference_fn(TinyNet(5)))
    self.assertIsNot(models.inference_fn(TinyNet(5)),
                     models.inference_fn(TinyNet(6)))

  def test_unhashable_module_falls_back(self):
    a = models.get_model("resnet8", 10, width=4, mean=[0.5], std=[0.5])
    fn = models.inference_fn(a)
    self.assertIsNot(fn, models.inference_fn(a))
    x = jnp.zeros((2, 8, 8, 1))
    v = a.init(jax.random.key(0), x)
    self.assertEqual(fn(v, x).shape, (2, 10))

  def test_one_trace_per_program_for_two_models_of_an_architecture(self):
    features = 7  # An architecture no other test compiles.
    cells = evaluators.build(_evals(), TEST, TARGETS, SEED)
    counts = []
    for seed in (0, 1):
      fn = models.inference_fn(TinyNet(features))
      variables = _variables(features, seed)
      per_cell = []
      for cell in cells:
        start = len(CALLS)
        cell.run(fn, variables)
        per_cell.append(len(CALLS) - start)
      counts.append(per_cell)
    first, second = counts
    # Model 1: one trace of the clean program (1 call), shared by the domain
    # cell and by the cached corruptions (uint8 batches are converted by a
    # model-free program, so float and uint8 inputs run the same clean
    # program); each attack program once (FGSM: one gradient; the
    # adversarial images are classified by the clean program, already
    # traced).
    self.assertEqual(first[:5], [1, 0, 0, 0, 0])
    self.assertEqual(first[5], 1)
    self.assertGreater(first[6], 0)
    # Model 2 (other weights, same architecture): no new trace at all.
    self.assertEqual(second, [0] * len(cells))
    # A new corruption program (fused path) is also traced once.
    with mock.patch.object(corruption, "CORRUPTED_CACHE_BYTES", 0):
      for seed in (0, 1):
        variables = _variables(features, seed)  # init calls the module too
        start = len(CALLS)
        for cell in cells[2:5]:
          cell.run(models.inference_fn(TinyNet(features)), variables)
        self.assertEqual(len(CALLS) - start, 3 if seed == 0 else 0)


  def test_transfer_from_a_model_to_itself_is_its_white_box_attack(self):
    features = 9  # An architecture no other test compiles.
    fn, v = models.inference_fn(TinyNet(features)), _variables(features, 2)
    cells = [c for c in evaluators.build(_evals(), TEST, TARGETS, SEED)
             if isinstance(c, attack_eval.AttackCell)]
    white = [c.run(fn, v).correct for c in cells]
    start = len(CALLS)
    tcells = transfer.cells(cells, "itself", fn, v, cells[0].batch_size)
    crossed = [c.run(fn, v).correct for c in tcells]
    # The white-box attack programs made the images: no new trace.
    self.assertEqual(len(CALLS), start)
    for w, t, c in zip(white, crossed, cells):
      np.testing.assert_array_equal(t, w, err_msg=c.name)

  def test_kept_source_images_spare_the_second_attack(self):
    # What the study runner does for a float original: its white-box cells
    # inside keep_source_images, then another model's transfer cells from
    # it; they find the images, and equal transfer cells that attack the
    # source themselves.
    src = (models.inference_fn(TinyNet(8)), _variables(8, 4))
    other = (models.inference_fn(TinyNet(8)), _variables(8, 5))
    cells = [c for c in evaluators.build(_evals(), TEST, TARGETS, SEED)
             if isinstance(c, attack_eval.AttackCell)]
    transfer.forget()
    attacks_run = mock.patch.object(attack_eval, "adversarial_images",
                                    wraps=attack_eval.adversarial_images)
    with attacks_run as spy:
      [c.run(*other) for c in cells]  # Another model: nothing kept.
      with transfer.keep_source_images("src", *src):
        [c.run(*other) for c in cells]  # Not the source: nothing kept.
        self.assertEqual(spy.call_count, 2 * len(cells))
        [c.run(*src) for c in cells]
      self.assertEqual(spy.call_count, 3 * len(cells))
      tcells = transfer.cells(cells, "src", *src, cells[0].batch_size)
      kept = [c.run(*other).correct for c in tcells]
      self.assertEqual(spy.call_count, 3 * len(cells))  # No new attack.
      transfer.forget()
      fresh = [c.run(*other).correct for c in tcells]
      self.assertEqual(spy.call_count, 4 * len(cells))
    for k, f, c in zip(kept, fresh, cells):
      np.testing.assert_array_equal(k, f, err_msg=c.name)
    self.assertEqual(attack_eval._KEEP_FOR, [])  # The context is closed.


_WORKER = """
import sys
import numpy as np
import jax
sys.path[:0] = [{root!r}, {tests!r}]
import evaluators_test as t
assert jax.device_count() == 4, jax.devices()
np.savez({out!r}, **{{k: r.correct for k, r in t._results().items()}})
"""


class MultiDeviceTest(absltest.TestCase):

  def test_four_devices_give_the_same_per_example_results(self):
    # XLA_FLAGS must be set before jax starts, hence a fresh process.
    out = os.path.join(tempfile.mkdtemp(), "four.npz")
    code = textwrap.dedent(_WORKER.format(
        root=ROOT, tests=os.path.dirname(os.path.abspath(__file__)), out=out))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   timeout=900)
    four = np.load(out)
    self.assertEqual(sorted(four), sorted(_results()))
    for key, result in _results().items():
      np.testing.assert_array_equal(four[key], result.correct, err_msg=key)


if __name__ == "__main__":
  absltest.main()
