"""Every config file loads and locks; typed arguments; override errors."""

import glob
import importlib
import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import flax
import ml_collections

from configs import common
from configs import digits_resnet
from configs import office31_resnet
from configs import validation
from robustjax.study import config_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if os.path.basename(p) not in ("__init__.py", "common.py", "validation.py"))


def _flat_keys(config):
  return set(flax.traverse_util.flatten_dict(config.to_dict()))


class ConfigFilesTest(parameterized.TestCase):

  def test_the_known_configs_are_found(self):
    self.assertContainsSubset(
        ["cifar10_resnet", "cifar10_study", "default", "digits_resnet",
         "office31_resnet", "office31_study"], CONFIG_FILES)

  @parameterized.named_parameters((name, name) for name in CONFIG_FILES)
  def test_loads_and_locks(self, name):
    module = importlib.import_module(f"configs.{name}")
    self.assertTrue(module.__doc__, "The docstring is the run record.")
    variants = [module.get_config()]
    try:
      variants.append(module.get_config("runlocal"))
    except ValueError as e:
      if "Unknown config argument 'runlocal'" not in str(e):
        raise
    for config in variants:
      self.assertIsInstance(config, ml_collections.ConfigDict)
      config.lock()
      with self.assertRaises(AttributeError):
        config.no_such_field = 1
      # Every field of the shared base is there (the trainer reads them).
      self.assertContainsSubset(_flat_keys(common.get_base_config()),
                                _flat_keys(config))
      json.loads(config.to_json_best_effort())  # Written as config.json.
      validation.validate(config)  # Every value is valid as shipped.
      config_checks.check_config(config)  # And every name is registered.
    if len(variants) == 2:
      smoke = variants[1]
      self.assertBetween(smoke.num_train_steps, 1, 100)
      self.assertBetween(smoke.dataset.max_train_examples, 1, 1024)

  def test_split_train_step_must_be_a_bool(self):
    from configs import default  # pylint: disable=g-import-not-at-top
    c = default.get_config("runlocal")
    self.assertIs(c.split_train_step, True)  # The compile-bound study.
    self.assertIs(common.get_base_config().split_train_step, False)
    c.split_train_step = None
    with self.assertRaisesRegex(ValueError, "config.split_train_step=None is "
                                "not valid: use True or False."):
      validation.validate(c)

  def test_eval_every_steps_values(self):
    c = digits_resnet.get_config("runlocal")
    for ok in (-2, -1, 0, 7):
      c.eval_every_steps = ok
      validation.validate(c)
    c.eval_every_steps = -3
    with self.assertRaisesRegex(ValueError, "config.eval_every_steps=-3 is "
                                r"not valid: use a positive step count, -1 "
                                r"\(every epoch\), 0 \(at the end\) or -2 "
                                r"\(never\)."):
      validation.validate(c)

  def test_default_seeds_argument(self):
    from configs import default  # pylint: disable=g-import-not-at-top
    self.assertEqual(default.get_config().study.seeds, 3)
    c = default.get_config("seeds=10")
    self.assertEqual(c.study.seeds, 10)
    self.assertIsInstance(c.study.seeds, int)
    validation.validate(c)
    with self.assertRaisesRegex(ValueError, "Config argument seeds='2.5': "
                                "Expected an integer"):
      default.get_config("seeds=2.5")
    with self.assertRaisesRegex(ValueError, r"config.study.seeds=0 is not "
                                "valid: use a positive number."):
      validation.validate(default.get_config("seeds=0"))

  def test_default_negative_control_and_gradual_pruning(self):
    from configs import default  # pylint: disable=g-import-not-at-top
    c = default.get_config()
    self.assertEqual(c.study.negative_control, "resnet8:16")
    self.assertEqual(c.study.prune.gradual_above, 0.9)
    # The smoke grid keeps the control, on its own largest arch.
    self.assertEqual(default.get_config("runlocal").study.negative_control,
                     "resnet8:8")
    base = common.get_base_config()
    self.assertEqual((base.study.negative_control,
                      base.study.prune.gradual_above,
                      base.compress.gradual_epochs, base.compress.gradual_lr),
                     ("", 1.0, -1.0, -1.0))
    self.assertEqual(
        base.study.claims.to_dict(),
        dict(alpha=0.05, primary=("domain", "adversarial"),
             max_clean_drop=0.05, equivalence_margin=0.02))

  @parameterized.parameters(
      ("study.negative_control", "resnet8:32", r"use one of study.archs "
       r"\('resnet8:8', 'resnet8:12', 'resnet8:16'\) \(its original is "
       r"retrained from another seed as the negative control\), or '' for "
       r"none\."),
      ("study.negative_control", None, "use one of study.archs"),
      ("study.prune.gradual_above", 1.5, r"a sparsity in \[0, 1\]"),
      ("study.prune.gradual_above", "0.9", r"a sparsity in \[0, 1\]"),
      ("compress.gradual_epochs", 0.0, "use a positive number, or -1 for "
       r"compress.finetune_epochs\."),
      ("compress.gradual_lr", -0.5, "use a positive number, or -1 for "
       r"compress.finetune_lr\."),
      ("study.claims.alpha", 0.0, r"a family-wise error rate in \(0, 1\)"),
      ("study.claims.alpha", 1.0, r"a family-wise error rate in \(0, 1\)"),
      ("study.claims.primary", (), "a non-empty tuple of distinct shift "
       "types from domain, corruption, adversarial."),
      ("study.claims.primary", ("domain", "clean"), "a non-empty tuple"),
      ("study.claims.primary", ("domain", "domain"), "a non-empty tuple"),
      ("study.claims.primary", "domain", "a non-empty tuple"),
      ("study.claims.max_clean_drop", -0.01, r"an accuracy difference in "
       r"\[0, 1\]"),
      ("study.claims.max_clean_drop", float("nan"), "an accuracy difference"),
      ("study.claims.equivalence_margin", 0.0, r"a margin in "
       r"chance-corrected R in \(0, 1\)"),
      ("study.claims.equivalence_margin", True, "a margin in"))
  def test_study_extras_errors(self, field, value, error):
    from configs import default  # pylint: disable=g-import-not-at-top
    c = default.get_config()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[leaf] = value
    with self.assertRaisesRegex(ValueError, rf"config.{field}=.* is not "
                                f"valid: {error}"):
      validation.validate(c)

  def test_study_extras_accepted_values(self):
    from configs import default  # pylint: disable=g-import-not-at-top
    c = default.get_config()
    c.study.negative_control = ""
    c.study.prune.gradual_above = 1.0
    c.compress.gradual_epochs = -1.0
    c.study.claims.primary = ("corruption",)
    c.study.claims.max_clean_drop = 0.0
    validation.validate(c)

  def test_digits_arguments(self):
    c = digits_resnet.get_config("model=resnet8,width=8,epochs=2")
    self.assertEqual((c.model.name, c.model.width, c.num_epochs),
                     ("resnet8", 8, 2.0))
    self.assertIsInstance(c.num_epochs, float)
    self.assertEqual(c.dataset.targets, ("uci",))
    self.assertEqual(digits_resnet.get_config().model.name, "resnet20")

  def test_office31_arguments(self):
    c = office31_resnet.get_config("source=dslr,init=/w/r50.safetensors")
    self.assertEqual(c.dataset.source, "dslr")
    self.assertEqual(c.dataset.targets, ("amazon", "webcam"))
    self.assertEqual(c.optimizer.learning_rate, 0.01)  # Fine-tuning.
    with self.assertRaisesRegex(ValueError, "source='caltech'.*amazon, dslr, "
                                "webcam"):
      office31_resnet.get_config("source=caltech")


class ParseArgTest(parameterized.TestCase):

  SPEC = dict(model="resnet20", width=16, epochs=8.0, runlocal=False,
              targets=("uci",))

  def test_defaults(self):
    for arg in (None, ""):
      self.assertEqual(common.parse_arg(arg, **self.SPEC).to_dict(),
                       self.SPEC)

  def test_typed_values(self):
    a = common.parse_arg("model=resnet8,width=32,epochs=3,runlocal,"
                         "targets=a+b", **self.SPEC)
    self.assertEqual(a.model, "resnet8")
    self.assertEqual(a.width, 32)
    self.assertIsInstance(a.width, int)
    self.assertEqual(a.epochs, 3.0)
    self.assertIsInstance(a.epochs, float)
    self.assertIs(a.runlocal, True)
    self.assertEqual(a.targets, ("a", "b"))

  @parameterized.parameters(("runlocal=false", False), ("runlocal=0", False),
                            ("runlocal=yes", True), ("runlocal=True", True),
                            ("runlocal=", True))
  def test_booleans(self, arg, expected):
    self.assertIs(common.parse_arg(arg, **self.SPEC).runlocal, expected)

  def test_unknown_key_lists_the_accepted(self):
    with self.assertRaisesRegex(
        ValueError, "Unknown config argument 'widht' in 'widht=8'. This "
        "config accepts: epochs, model, runlocal, targets, width."):
      common.parse_arg("widht=8", **self.SPEC)
    with self.assertRaisesRegex(ValueError, "'runloc'.*accepts: epochs, "
                                "model, runlocal, width"):
      digits_resnet.get_config("runloc")

  @parameterized.parameters(
      ("width=2.5", "width='2.5': Expected an integer"),
      ("width=abc", "width='abc': Expected an integer"),
      ("width=[1]", "width='\\[1\\]': Expected an integer"),
      ("epochs=fast", "epochs='fast': Expected a number"),
      ("runlocal=maybe", "runlocal='maybe': Expected a boolean"))
  def test_bad_values(self, arg, error):
    with self.assertRaisesRegex(ValueError, "Config argument " + error):
      common.parse_arg(arg, **self.SPEC)


class OverrideErrorTest(parameterized.TestCase):
  """`--config.<field>=...` for a field the config lacks, via the launcher."""

  @parameterized.parameters(
      ("--config.foo=1", "--config.foo: the config has no field 'foo'."),
      ("--config.model.widht=8", "--config.model.widht: the config has no "
       "field 'widht'. Did you mean \"width\""))
  def test_unknown_override(self, override, expected):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "train.py"),
         "--config=" + os.path.join(ROOT, "configs", "digits_resnet.py")
         + ":runlocal",
         "--workdir=" + self.create_tempdir().full_path, override],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertIn("FATAL Flags parsing error: " + expected, result.stderr)
    self.assertIn("configs/common.py", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  absltest.main()
