"""The study grid: the negative control's replicate, gradual pruning above a
sparsity, and the size-matched models that dedup against both."""

from absl.testing import absltest

from configs import default
from robustjax.study import grid


def _by_id(config):
  return {s.model_id: s for s in grid.model_specs(config)}


def _pruned(config, arch):
  """{model_id: (schedule, sparsity)} of `arch`'s pruned models."""
  return {s.model_id: (s.settings["schedule"], s.settings["sparsity"])
          for s in grid.model_specs(config)
          if s.arch == arch and s.method == "prune"}


class ReplicateTest(absltest.TestCase):

  def test_default_grid_has_one_replicate_of_the_w16_original(self):
    specs = grid.model_specs(default.get_config())
    replicates = [s for s in specs if s.method == "replicate"]
    self.assertLen(replicates, 1)
    r = replicates[0]
    self.assertEqual((r.model_id, r.arch, r.original_id, r.base_id,
                      r.settings),
                     ("resnet8-w16/replicate", "resnet8:16",
                      "resnet8-w16/original", None, {}))
    # After its original (the source of its transfer attacks).
    ids = [s.model_id for s in specs]
    self.assertLess(ids.index("resnet8-w16/original"),
                    ids.index("resnet8-w16/replicate"))

  def test_no_control_no_replicate(self):
    c = default.get_config()
    c.study.negative_control = ""
    self.assertNotIn("replicate", {s.method for s in grid.model_specs(c)})

  def test_control_must_be_an_arch_of_the_grid(self):
    c = default.get_config()
    c.study.negative_control = "resnet8:32"
    with self.assertRaisesRegex(ValueError, r"study.negative_control="
                                r"'resnet8:32' must be one of study.archs"):
      grid.model_specs(c)

  def test_runlocal_replicates_its_largest_arch(self):
    specs = _by_id(default.get_config("runlocal"))
    self.assertEqual(specs["resnet8-w8/replicate"].original_id,
                     "resnet8-w8/original")

  def test_training_seed_is_independent_of_every_other_model(self):
    c = default.get_config("seeds=10")
    seeds = grid.seeds(c)
    specs = grid.model_specs(c)
    replicate = _by_id(c)["resnet8-w16/replicate"]
    used = {grid.training_seed(s, seed) for s in specs for seed in seeds
            if s.method != "replicate"}
    self.assertEqual(used, set(seeds))  # Every other model: its seed.
    controls = [grid.training_seed(replicate, seed) for seed in seeds]
    self.assertLen(set(controls), len(seeds))
    self.assertEmpty(set(controls) & used)
    # Below 2**32: JAX keys keep a seed's low 32 bits.
    self.assertLess(max(controls), 2**32)
    # The same replicates however many seeds a run has.
    self.assertEqual(controls[:3], [grid.training_seed(replicate, s) for s in
                                    grid.seeds(default.get_config())])
    with self.assertRaisesRegex(ValueError, "independent replicate seed"):
      grid.training_seed(replicate, grid.REPLICATE_SEED_OFFSET)


class GradualAboveTest(absltest.TestCase):

  def test_default_grid_prunes_past_90_percent_gradually(self):
    c = default.get_config()
    for arch, expected in (
        ("resnet8:8", {"resnet8-w8/prune-global-s0.75": ("oneshot", 0.75)}),
        ("resnet8:12", {
            "resnet8-w12/prune-global-s0.75": ("oneshot", 0.75),
            "resnet8-w12/prune-global-gradual-s0.9186": ("gradual", 0.9186)}),
        ("resnet8:16", {
            "resnet8-w16/prune-global-s0.75": ("oneshot", 0.75),
            "resnet8-w16/prune-global-s0.4757": ("oneshot", 0.4757),
            "resnet8-w16/prune-global-s0.7952": ("oneshot", 0.7952),
            "resnet8-w16/prune-global-s0.88": ("oneshot", 0.88),
            "resnet8-w16/prune-global-gradual-s0.9106": ("gradual", 0.9106),
            "resnet8-w16/prune-global-gradual-s0.9749": ("gradual", 0.9749)}
        )):
      self.assertEqual(_pruned(c, arch), expected, arch)

  def test_the_switch_changes_schedules_not_sparsities(self):
    c = default.get_config()
    c.study.prune.gradual_above = 1.0  # Never: every model one-shot.
    before = _pruned(c, "resnet8:16")
    self.assertEqual({v[0] for v in before.values()}, {"oneshot"})
    after = _pruned(default.get_config(), "resnet8:16")
    self.assertEqual(sorted(v[1] for v in before.values()),
                     sorted(v[1] for v in after.values()))

  def test_at_the_threshold_stays_oneshot(self):
    c = default.get_config()
    c.study.prune.match_sizes = False
    c.study.prune.sparsities = (0.9, 0.95)
    self.assertEqual(_pruned(c, "resnet8:8"), {
        "resnet8-w8/prune-global-s0.9": ("oneshot", 0.9),
        "resnet8-w8/prune-global-gradual-s0.95": ("gradual", 0.95)})

  def test_listed_oneshot_and_gradual_above_it_are_one_model(self):
    for schedules in (("oneshot", "gradual"), ("gradual", "oneshot")):
      c = default.get_config()
      c.study.prune.match_sizes = False
      c.study.prune.sparsities = (0.5, 0.95)
      c.study.prune.schedules = schedules
      self.assertEqual(_pruned(c, "resnet8:8"), {
          "resnet8-w8/prune-global-s0.5": ("oneshot", 0.5),
          "resnet8-w8/prune-global-gradual-s0.5": ("gradual", 0.5),
          "resnet8-w8/prune-global-gradual-s0.95": ("gradual", 0.95)},
                       schedules)

  def test_a_repeated_sparsity_is_still_an_error(self):
    c = default.get_config()
    c.study.prune.sparsities = (0.95, 0.95)
    with self.assertRaisesRegex(ValueError, "Duplicate model 'resnet8-w8/"
                                "prune-global-gradual-s0.95'"):
      grid.model_specs(c)

  def test_size_matched_models_reuse_a_listed_gradual_one(self):
    c = default.get_config()
    c.study.prune.sparsities = (0.75, 0.9749)  # w16 at w8's 75 % size.
    pruned = _pruned(c, "resnet8:16")
    near = [k for k, (_, s) in pruned.items() if abs(s - 0.9749) < 0.01]
    self.assertEqual(near, ["resnet8-w16/prune-global-gradual-s0.9749"])

  def test_size_matched_models_reuse_a_listed_oneshot_one_below(self):
    c = default.get_config()
    c.study.prune.gradual_above = 0.99
    c.study.prune.sparsities = (0.75, 0.9749)
    pruned = _pruned(c, "resnet8:16")
    near = [k for k, (_, s) in pruned.items() if abs(s - 0.9749) < 0.01]
    self.assertEqual(near, ["resnet8-w16/prune-global-s0.9749"])

  def test_a_gradual_model_listed_below_the_threshold_is_not_reused(self):
    # The grid prunes a matched model at 0.75-0.8 one-shot, so a listed
    # gradual one at that size does not stand in for it.
    c = default.get_config()
    c.study.prune.schedules = ("gradual",)
    pruned = _pruned(c, "resnet8:16")
    self.assertEqual(pruned["resnet8-w16/prune-global-gradual-s0.75"],
                     ("gradual", 0.75))
    self.assertEqual(pruned["resnet8-w16/prune-global-s0.7952"],
                     ("oneshot", 0.7952))

  def test_quantize_after_prune_finds_the_gradual_model(self):
    c = default.get_config()
    c.study.prune.sparsities = (0.75, 0.95)
    c.study.quantize.pruned = (0.95,)
    q = _by_id(c)["resnet8-w16/prune-global-gradual-s0.95-ptq-w8a8"]
    self.assertEqual(q.base_id, "resnet8-w16/prune-global-gradual-s0.95")


if __name__ == "__main__":
  absltest.main()
