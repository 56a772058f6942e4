"""Tests for robustjax.train.trainer on the embedded digits.

A ResNet-8 of width 4 trains for 100 steps (~3 s of compute on a 2-core CPU
once compiled) and classifies MNIST far above chance. The failure-path tests
use the `runlocal` smoke config with a constant schedule, shared with
resume_test.py so the compiled programs are reused (see tests/conftest.py).
"""

import json
import os
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np
import optax

from configs import digits_resnet
from robustjax import io
from robustjax import models
from robustjax import cpu_setup
from robustjax import parallel
from robustjax import train
from robustjax import checkpoint
from robustjax.data import loader
from robustjax.models import factory
from robustjax.robustness import evaluators
from robustjax.train import steps


def smoke_config(num_train_steps, **optimizer):
  """The digits smoke run: ResNet-8 width 4, 256 examples, constant lr."""
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.optimizer.schedule = "constant"
  c.optimizer.update(optimizer)
  c.num_train_steps = num_train_steps
  c.log_every_steps = 2
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 4
  return c


def _restore(workdir, like):
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    return ckpt.latest_step(), ckpt.restore(checkpoint.abstract(like))
  finally:
    ckpt.close()


class TrainEndToEndTest(absltest.TestCase):

  def test_digits_training_learns(self):
    config = digits_resnet.get_config("model=resnet8,width=4")
    config.batch_size = 32
    config.num_train_steps = 100
    config.log_every_steps = 25
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50
    workdir = self.create_tempdir().full_path
    state = train.train_and_evaluate(config, workdir)
    self.assertEqual(int(state.step), 100)

    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final["step"], 100)
    self.assertGreater(final["test_accuracy"], 0.5)  # Chance: 10 %.

    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    self.assertEqual([r["step"] for r in train_rows], [25, 50, 75, 100])
    self.assertEqual([r["step"] for r in eval_rows], [50, 100])
    for r in train_rows:
      for key in ("loss", "accuracy", "images_per_sec", "epoch", "time"):
        self.assertIn(key, r)
      self.assertBetween(r["accuracy"], 0.0, 1.0)
    self.assertLess(train_rows[-1]["loss"], train_rows[0]["loss"])
    self.assertGreater(train_rows[-1]["accuracy"], 0.5)
    self.assertAlmostEqual(train_rows[-1]["epoch"], 100 * 32 / 4000)
    self.assertEqual(eval_rows[-1]["test_accuracy"], final["test_accuracy"])
    self.assertEqual(eval_rows[-1]["target/uci_accuracy"],
                     final["target/uci_accuracy"])

    # The record of the run: the resolved config, as JSON.
    written = json.load(open(os.path.join(workdir, "config.json")))
    self.assertEqual(written, json.loads(config.to_json_best_effort()))
    self.assertEqual(written["model"]["width"], 4)
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, "checkpoints"))),
                     ["100", "50"])

    # The returned state is the evaluated model.
    model = factory.build_model(config)
    _, evals = loader.load_data(config)
    for name in ("test", "target/uci"):
      self.assertEqual(
          evaluators.accuracy(models.inference_fn(model), state.variables,
                              evals[name], config.eval_batch_size),
          final[f"{name}_accuracy"])
    step, restored = _restore(workdir, state)
    self.assertEqual(step, 100)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
      np.testing.assert_array_equal(a, b)


class NeverEvaluateTest(absltest.TestCase):

  def test_minus_two_trains_without_evaluating(self):
    # What a study's builds use: its clean and domain cells evaluate the
    # model with the same program, so training does not.
    config = smoke_config(4)
    config.eval_every_steps = -2
    workdir = self.create_tempdir().full_path
    with mock.patch.object(evaluators, "accuracy",
                           wraps=evaluators.accuracy) as spy:
      state = train.train_and_evaluate(config, workdir)
    self.assertEqual(int(state.step), 4)
    self.assertEqual(spy.call_count, 0)
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final, {"step": 4})
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r for r in rows if r["split"] == "eval"], [])
    self.assertNotEmpty([r for r in rows if r["split"] == "train"])


def _train_step_traces(test, program="train_step"):
  """A list that grows by one each time the trainer's `program` is traced
  (for `test`): train_step, or with `split_train_step` gradients and
  apply_gradients."""
  traces = []

  def listener(event, duration, **kwargs):
    del duration
    if (event == "/jax/core/compile/jaxpr_trace_duration"
        and kwargs.get("fun_name") == program):
      traces.append(1)
  jax.monitoring.register_event_duration_secs_listener(listener)
  test.addCleanup(jax.monitoring.unregister_event_duration_listener, listener)
  return traces


class StepSharingTest(absltest.TestCase):
  """Trainings that compile the same train step trace it once per process."""

  def test_same_program_is_traced_once_and_gives_the_same_numbers(self):
    from robustjax.compress import distillation
    from robustjax.compress import pruning
    from robustjax.train import trainer
    traces = _train_step_traces(self)

    def run(recipe=None, **overrides):
      c = smoke_config(3)
      c.checkpoint_every_steps = 0
      c.update(overrides)
      return train.train_and_evaluate(c, self.create_tempdir().full_path,
                                      recipe)

    steps.clear_cache()
    first = run(seed=0)
    n = len(traces)
    self.assertGreaterEqual(n, 1)
    run(seed=1)  # Another seed: the same program, no new trace.
    self.assertLen(traces, n)
    steps.clear_cache()  # A fresh jit gives the same numbers.
    again = run(seed=0)
    self.assertLen(traces, n + 1)
    for a, b in zip(jax.tree.leaves(first.params),
                    jax.tree.leaves(again.params)):
      np.testing.assert_array_equal(a, b)
    run(label_smoothing=0.1)  # A different program: traced.
    self.assertLen(traces, n + 2)
    # One-shot pruning at any sparsity: one program (the masks are state),
    # and each run keeps its own masks.
    for sparsity in (0.5, 0.8):
      pruned = run(trainer.Recipe(
          wrap_tx=pruning.magnitude_pruner(sparsity).wrap_tx))
      self.assertLen(traces, n + 3)
      self.assertAlmostEqual(
          pruning.sparsity_report(pruned.params)["prunable_sparsity"],
          sparsity, delta=0.01)
    # Gradual pruning recomputes its masks in the step: its own program.
    run(trainer.Recipe(wrap_tx=pruning.magnitude_pruner(
        0.5, schedule="gradual", end_step=2, update_every=1).wrap_tx))
    self.assertLen(traces, n + 4)
    # Recipes with the same settings are the same objects (hence shared).
    self.assertIs(pruning.magnitude_pruner(0.5).wrap_tx,
                  pruning.magnitude_pruner(0.5).wrap_tx)
    self.assertIsNot(pruning.magnitude_pruner(0.5).wrap_tx,
                     pruning.magnitude_pruner(0.6).wrap_tx)
    self.assertIs(pruning.default_prunable(True), pruning.default_prunable(True))
    self.assertIs(
        pruning.magnitude_pruner(0.5, prunable=pruning.default_prunable()),
        pruning.magnitude_pruner(0.5, prunable=pruning.default_prunable()))
    # Unhashable arguments: a fresh (working, unshared) object.
    a, b = (pruning.default_prunable(exclude=["head"]) for _ in range(2))
    self.assertIsNot(a, b)
    self.assertFalse(a(("head", "kernel"), np.zeros((3, 3))))
    apply_fn = models.inference_fn(factory.build_model(smoke_config(1)))
    self.assertIs(distillation.make_loss_fn(apply_fn, 4.0, 0.9),
                  distillation.make_loss_fn(apply_fn, 4.0, 0.9))

  def test_split_step_shares_gradients_and_updates(self):
    from robustjax.compress import pruning
    from robustjax.train import trainer
    traces = _train_step_traces(self, "gradients")
    updates = _train_step_traces(self, "apply_gradients")

    def run(recipe=None, **overrides):
      c = smoke_config(3)
      c.checkpoint_every_steps = 0
      c.split_train_step = True
      c.update(overrides)
      return train.train_and_evaluate(c, self.create_tempdir().full_path,
                                      recipe)

    steps.clear_cache()
    first = run(seed=0)
    n, u = len(traces), len(updates)
    self.assertGreaterEqual(n, 1)
    self.assertGreaterEqual(u, 1)
    run(seed=1)  # Another seed: the same programs, no new trace.
    self.assertEqual((len(traces), len(updates)), (n, u))
    steps.clear_cache()  # A fresh jit gives the same numbers.
    again = run(seed=0)
    self.assertEqual((len(traces), len(updates)), (n + 1, u + 1))
    for a, b in zip(jax.tree.leaves(first.params),
                    jax.tree.leaves(again.params)):
      np.testing.assert_array_equal(a, b)
    # Another loss: its own gradient program, the same update.
    run(label_smoothing=0.1)
    self.assertEqual((len(traces), len(updates)), (n + 2, u + 1))
    # One-shot pruning at any sparsity: the dense model's gradient program
    # and one update program (the masks are state); each run keeps its own
    # masks.
    for sparsity in (0.5, 0.8):
      pruned = run(trainer.Recipe(
          wrap_tx=pruning.magnitude_pruner(sparsity).wrap_tx))
      self.assertEqual((len(traces), len(updates)), (n + 2, u + 2))
      self.assertAlmostEqual(
          pruning.sparsity_report(pruned.params)["prunable_sparsity"],
          sparsity, delta=0.01)
    # Gradual pruning recomputes its masks in the update: its own update.
    run(trainer.Recipe(wrap_tx=pruning.magnitude_pruner(
        0.5, schedule="gradual", end_step=2, update_every=1).wrap_tx))
    self.assertEqual((len(traces), len(updates)), (n + 2, u + 3))
  def test_trainings_of_different_lengths_share_one_program(self):
    from robustjax.train import trainer
    traces = _train_step_traces(self)

    def run(num_steps, recipe=None):
      c = smoke_config(num_steps)
      c.optimizer.schedule = "cosine"  # The learning rates depend on it.
      c.checkpoint_every_steps = 0
      return train.train_and_evaluate(c, self.create_tempdir().full_path,
                                      recipe)

    steps.clear_cache()
    run(3)
    n = len(traces)
    shared = run(5)  # The program traced for 3 steps, told 5.
    self.assertLen(traces, n)
    steps.clear_cache()
    fresh = run(5)  # Traced for 5 steps.
    self.assertLen(traces, n + 1)
    for a, b in zip(jax.tree.leaves(shared.params),
                    jax.tree.leaves(fresh.params)):
      np.testing.assert_array_equal(a, b)
    # A recipe's plain optax wrapper (no extra arguments) still trains: its
    # optimizer keeps the schedule built for the run's length, and its step
    # is its own program.
    plain = trainer.Recipe(wrap_tx=lambda tx: optax.GradientTransformation(
        tx.init, lambda u, s, p=None: tx.update(u, s, p)))
    wrapped = run(5, plain)
    self.assertLen(traces, n + 2)
    for a, b in zip(jax.tree.leaves(wrapped.params),
                    jax.tree.leaves(fresh.params)):
      np.testing.assert_array_equal(a, b)


  def test_split_step_equals_one_program(self):
    """`split_train_step` (gradient + update programs) gives the one-program
    step's numbers bit for bit: one dense model and two stacked one-shot
    pruned ones, with a cosine schedule and augmentation."""
    import copy
    from robustjax.compress import pruning
    from robustjax.models import batched
    from robustjax.train import optim
    from robustjax.train import state as state_lib
    from robustjax.train import trainer
    c = smoke_config(4)
    c.optimizer.schedule = "cosine"
    c.dataset.crop_padding = 2
    c.dataset.flip = True
    split = copy.deepcopy(c)
    split.split_train_step = True
    model = factory.build_model(c)
    mesh = parallel.train_mesh()
    rng = np.random.default_rng(0)
    shape = (c.batch_size,) + factory.input_shape(c)[1:]
    images = rng.integers(0, 256, (4,) + shape, np.uint8)
    labels = rng.integers(0, 10, (4, c.batch_size), np.int32)
    # On the host: each state below gets its own device buffers (the steps
    # donate their state).
    variables = [jax.device_get(factory.init_variables(
        model, c, jax.random.key(k))) for k in range(2)]
    # One dense model; two stacked one-shot pruned ones (as the study's
    # fine-tunes): each case compiles two steps, so not all four.
    pruned = trainer.Recipe(wrap_tx=pruning.magnitude_pruner(0.5).wrap_tx)
    for stacked, recipe in ((False, trainer.Recipe()), (True, pruned)):
      base = optim.make(c.optimizer, 4)
      tx = optax.with_extra_args_support(
          recipe.wrap_tx(base) if recipe.wrap_tx else base)
      programs = [steps.shared_train_step(
          model, cfg, 4, tx, mesh, loss_fn=recipe.loss_fn,
          wrap_tx=recipe.wrap_tx, stacked=stacked) for cfg in (c, split)]

      def new_state(tx=tx, stacked=stacked):
        states = [state_lib.create(v["params"], v["batch_stats"], tx,
                                   jax.random.key_data(jax.random.key(1)))
                  for v in variables[:1 + stacked]]
        return parallel.replicate(
            mesh, batched.stack(states) if stacked else states[0])

      states = [new_state(), new_state()]
      length = parallel.replicate(mesh, np.int32(4))
      for i in range(4):
        x, y = parallel.shard_batch(mesh, images[i], labels[i])
        out = [step(st, x, y, None, length)
               for step, st in zip(programs, states)]
        states = [o[0] for o in out]
        for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
          np.testing.assert_array_equal(a, b)


class CompilerOptionsTest(absltest.TestCase):
  """Large-activation train steps get XLA:CPU's elementwise fusions."""

  def test_first_stage_elements(self):
    c = smoke_config(1)  # 16x16 digits, batch c.batch_size.
    mesh = parallel.make_mesh(jax.devices()[:1])
    cifar = models.get_model("resnet20", num_classes=10, width=16)
    self.assertEqual(steps._first_stage_elements(cifar, c, mesh),
                     c.batch_size * 16 * 16 * 16)
    # Measured on CIFAR-style ResNets only.
    imagenet = models.get_model("resnet18", num_classes=10, width=8)
    self.assertIsNone(steps._first_stage_elements(imagenet, c, mesh))
    self.assertIsNone(steps._first_stage_elements(object(), c, mesh))

  def test_options_are_used_above_the_threshold_and_move_only_rounding(self):
    traces = _train_step_traces(self)

    def run():
      c = smoke_config(3)
      c.checkpoint_every_steps = 0
      return train.train_and_evaluate(c, self.create_tempdir().full_path)

    steps.clear_cache()
    plain = run()
    n = len(traces)
    # As in a launcher's process (configure_host_devices' flag), with the
    # threshold lowered to the smoke run's size.
    flags = " ".join([os.environ.get("XLA_FLAGS", ""),
                      cpu_setup.CPU_XLA_FLAGS[0]])
    with mock.patch.dict(os.environ, {"XLA_FLAGS": flags}), \
        mock.patch.object(cpu_setup, "ELTWISE_FUSION_MIN_ELEMENTS", 1), \
        self.assertLogs("absl", level="INFO") as logs:
      fused = run()
    self.assertLen(traces, n + 1)  # Its own program (the options are in
    # the step's key).
    self.assertTrue(any("LIBRARY_FUSION_TYPE_ELTWISE" in line
                        for line in logs.output), logs.output)
    # Float rounding only: a few ulp per elementwise op, over 3 steps.
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(fused.params)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(plain.params)])
    self.assertLess(np.linalg.norm(a - b) / np.linalg.norm(b), 1e-5)


class TrainFailuresTest(absltest.TestCase):

  def test_nan_loss_stops_and_keeps_the_checkpoint(self):
    workdir = self.create_tempdir().full_path
    good = train.train_and_evaluate(smoke_config(4), workdir)
    with self.assertRaises(FloatingPointError) as cm:
      train.train_and_evaluate(smoke_config(12, learning_rate=1e30), workdir)
    message = str(cm.exception)
    self.assertIn("NaN/Inf", message)
    self.assertIn("last good checkpoint (step 4) is intact", message)
    self.assertIn(os.path.join(workdir, "checkpoints"), message)
    self.assertIn("config.optimizer.learning_rate", message)
    step, restored = _restore(workdir, good)
    self.assertEqual(step, 4)
    for a, b in zip(jax.tree.leaves(restored.params),
                    jax.tree.leaves(good.params)):
      self.assertTrue(np.all(np.isfinite(a)))
      np.testing.assert_array_equal(a, b)

  def test_non_finite_update_is_never_saved(self):
    # learning_rate=inf: the loss of step 1 is finite (computed before the
    # update) but the updated parameters are not.
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(FloatingPointError,
                                "no checkpoint had been written yet"):
      train.train_and_evaluate(smoke_config(1, learning_rate=float("inf")),
                               workdir)
    self.assertEqual(os.listdir(os.path.join(workdir, "checkpoints")), [])
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 "final_metrics.json")))

  def test_incompatible_checkpoint(self):
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(smoke_config(2), workdir)
    wider = smoke_config(4)
    wider.model.width = 8
    with self.assertRaisesRegex(
        ValueError, "The checkpoint in .*checkpoints does not match this "
        "config's model/state .*different architecture, width.*fresh "
        "--workdir"):
      train.train_and_evaluate(wider, workdir)
    self.assertEqual(os.listdir(os.path.join(workdir, "checkpoints")), ["2"])

  def test_batch_larger_than_the_split(self):
    config = smoke_config(2)
    config.batch_size = 512  # runlocal keeps 256 training examples.
    with self.assertRaisesRegex(ValueError, "batch_size 512 is larger than "
                                "the training split digits/mnist/train"):
      train.train_and_evaluate(config, self.create_tempdir().full_path)


if __name__ == "__main__":
  absltest.main()
