"""The paper-scale study configs, end to end through `launch/study.py`.

* configs/office31_study.py:runlocal on a generated folder of JPEGs in the
  Office-31 layout (tests/data/office31_test.py), ResNet-18 initialised from
  random torchvision-layout weights through `init=DIR/{name}.safetensors`;
* configs/cifar10_study.py:runlocal on `tfds.testing.mock_data` (cifar10 and
  cifar10_corrupted), whose rows hold the CIFAR-10-C files' corruptions
  beside the generated ones.

Each study runs once (in setUpClass, as a user would: a subprocess of the
launcher); the tests read its workdir. The real datasets cannot be fetched
here, so the numbers themselves mean nothing: the tests check the protocol
(splits, domains, shifts, levels, row counts) and the outputs.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from safetensors import numpy as st_numpy

from configs import cifar10_study
from configs import office31_study
from configs import validation
from robustjax import io
from robustjax.data import registry
from robustjax.robustness import corruptions
from robustjax.robustness.evaluators import checks
from robustjax.study import journal as journal_lib
from robustjax.study import report
from robustjax.study import runner
from tests.data import office31_test
from tests.models import pretrained_test

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
PLOTS = ("accuracy_vs_size.png", "accuracy_vs_severity.png",
         "accuracy_vs_eps.png")
# launch/study.py with the tfds catalogue mocked (in the launcher's process).
MOCKED_LAUNCH = (
    "import tensorflow_datasets as tfds\n"
    "from launch import study\n"
    "with tfds.testing.mock_data(num_examples=64):\n"
    "  study.run()\n")


def _launch(args, mocked=False):
  """Runs launch/study.py (or its mocked form) from the repository root."""
  command = ([sys.executable, "-c", MOCKED_LAUNCH] if mocked else
             [sys.executable, os.path.join(REPO, "launch", "study.py")])
  result = subprocess.run(command + args, capture_output=True, text=True,
                          cwd=REPO, timeout=1500, check=False)
  if result.returncode:
    raise AssertionError(f"launch/study.py {args} failed:\n"
                         f"{result.stderr[-4000:]}")
  return result


class _StudyTest(absltest.TestCase):
  """Shared checks of a finished study workdir."""

  workdir = ""

  def rows(self):
    return io.read_jsonl(os.path.join(self.workdir, runner.RESULTS))

  def by_cell(self):
    """(model_id, shift, name) -> {level: n}."""
    out = collections.defaultdict(dict)
    for r in self.rows():
      out[(r["model_id"], r["shift"], r["name"])][r["level"]] = r["n"]
    return out

  def check_outputs(self):
    rows = self.rows()
    self.assertNotEmpty(rows)
    for r in rows:
      runner.validate_row(r)
    self.assertEqual({r["method"] for r in rows}, {"original", "prune"})
    for name in ("report.md", "results.csv", "config.json") + tuple(
        os.path.join("plots", p) for p in PLOTS):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, name)), name)
    text = open(os.path.join(self.workdir, "report.md")).read()
    self.assertIn("## Claims", text)
    self.assertIn(f"Complete: {len(self.by_cell())} of", text)
    # Every row is backed by its per-example correctness.
    journal = journal_lib.Journal(os.path.join(self.workdir, runner.JOURNAL))
    examples = journal_lib.examples_of(journal)
    for r in rows:
      bits = examples[(r["model_id"], r["seed"], r["shift"], r["name"])]
      levels = sorted(self.by_cell()[(r["model_id"], r["shift"], r["name"])],
                      key=lambda v: -1 if v is None else v)
      self.assertEqual(bits.shape, (len(levels), r["n"]))
      self.assertEqual(bits[levels.index(r["level"])].mean(), r["accuracy"])
    return text


class Office31StudyTest(_StudyTest):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    manual = office31_test.write_office31(os.path.join(cls.root, "manual"))
    weights = os.path.join(cls.root, "weights")
    os.makedirs(weights)
    st_numpy.save_file(pretrained_test.random_state_dict(18, width=8),
                       os.path.join(weights, "resnet18.safetensors"))
    cls.init = os.path.join(weights, "{name}.safetensors")
    cls.arg = (f"runlocal,source=amazon,init={cls.init},manual_dir={manual},"
               f"data_dir={os.path.join(cls.root, 'tfds')}")
    cls.workdir = os.path.join(cls.root, "study")
    _launch([f"--config={REPO}/configs/office31_study.py:{cls.arg}",
             f"--workdir={cls.workdir}"])

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_protocol(self):
    text = self.check_outputs()
    cells = self.by_cell()
    original = "resnet18-w8/original"
    # Clean accuracy on the held-out 20 % of amazon's 10 images; the two
    # other domains whole; corruptions and PGD on the held-out split.
    layout = office31_test.LAYOUT
    self.assertEqual(cells[(original, "clean", "source")], {None: 2})
    for target in ("dslr", "webcam"):
      self.assertEqual(cells[(original, "domain", target)],
                       {None: sum(layout[target].values())})
    self.assertEqual(cells[(original, "corruption", "gaussian_noise")],
                     {s: 2 for s in range(1, 6)})
    self.assertEqual(cells[(original, "adversarial", "pgd_linf")],
                     {0.0: 2, 8 / 255: 2})
    config = json.load(open(os.path.join(self.workdir, "config.json")))
    self.assertEqual(config["evals"]["corruptions"]["table"], "imagenet")
    self.assertEqual((config["dataset"]["train_split"],
                      config["dataset"]["test_split"]), ("train", "test"))
    # The weights file of each architecture was read ({name} -> resnet18),
    # so the report carries no from-scratch warning.
    log = open(os.path.join(self.workdir, "log.txt")).read()
    self.assertIn(os.path.join(self.root, "weights", "resnet18.safetensors"),
                  log)
    self.assertEqual(config["study"]["notes"], [])
    self.assertNotIn("trained from scratch", text)

  def test_from_scratch_report_warns(self):
    scratch = office31_study.get_config("runlocal")
    self.assertEqual(scratch.model.init, "")
    self.assertLen(scratch.study.notes, 1)
    workdir = os.path.join(self.root, "scratch_report")
    shutil.copytree(self.workdir, workdir)
    config = json.load(open(os.path.join(workdir, "config.json")))
    config["study"]["notes"] = list(scratch.study.notes)
    io.write_json(os.path.join(workdir, "config.json"), config)
    text = open(report.render(workdir)).read()
    title, warning = text.splitlines()[0], text.splitlines()[2]
    self.assertIn("Office-31 amazon -> dslr + webcam", title)
    self.assertTrue(warning.startswith("**Warning: trained from scratch**"))


class Cifar10StudyTest(_StudyTest):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.root, "study")
    _launch([f"--config={REPO}/configs/cifar10_study.py:runlocal",
             f"--workdir={cls.workdir}"], mocked=True)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_released_corruptions_beside_generated_ones(self):
    text = self.check_outputs()
    cells = self.by_cell()
    config = cifar10_study.get_config("runlocal")
    for model in ("resnet20-w4/original", "resnet20-w4/prune-global-s0.9"):
      names = {k[2] for k in cells if k[:2] == (model, "corruption")}
      self.assertEqual(names, {"gaussian_noise", "contrast",
                               "cifar10_corrupted/gaussian_noise",
                               "cifar10_corrupted/contrast"})
      for name in ("gaussian_noise", "contrast"):
        # Same levels; generated on the first 64 test images, read from the
        # first 32 records of each `<name>_<severity>` config.
        self.assertEqual(cells[(model, "corruption", name)],
                         {s: 64 for s in range(1, 6)})
        self.assertEqual(
            cells[(model, "corruption", f"cifar10_corrupted/{name}")],
            {s: config.evals.datasets.max_examples for s in range(1, 6)})
    # The severity table has one mean per source, side by side.
    table = text.split("## Corruptions")[1].split("## Adversarial")[0]
    for model in ("resnet20-w4/original", "resnet20-w4/prune-global-s0.9"):
      self.assertIn(f"| {model} | mean |", table)
      self.assertIn(f"| {model} | mean (cifar10_corrupted) |", table)

  def test_paper_config(self):
    c = cifar10_study.get_config()
    self.assertEqual(c.study.archs, ("resnet20:16", "resnet56:16",
                                     "resnet20:32"))
    self.assertTrue(c.study.prune.match_sizes)
    self.assertEqual(c.study.seeds, 3)
    # Every CIFAR-10-C corruption is generated too, and read from all 95
    # configs of the released files.
    self.assertEqual(sorted(checks.expand(c.evals.corruptions.names,
                                          corruptions.PRESETS)),
                     sorted(registry.CIFAR10_C_CORRUPTIONS))
    self.assertEqual((c.evals.datasets.name, c.evals.datasets.domains,
                      c.evals.datasets.as_corruption),
                     ("cifar10_corrupted", (), True))
    np.testing.assert_allclose(np.asarray(c.evals.attacks.eps) * 255,
                               [0, 1, 2, 4, 8])


class Office31ConfigTest(absltest.TestCase):

  def test_three_sources_cover_the_six_pairs(self):
    pairs = set()
    for source in ("amazon", "dslr", "webcam"):
      c = validation.validate(office31_study.get_config(f"source={source}"))
      self.assertEqual(c.dataset.source, source)
      pairs |= {(source, t) for t in c.dataset.targets}
      self.assertEqual((c.dataset.train_split, c.dataset.test_split,
                        c.dataset.target_split), ("train", "test", "full"))
    self.assertLen(pairs, 6)

  def test_paper_settings(self):
    c = office31_study.get_config("init=/w/{name}.safetensors")
    self.assertEqual(c.study.archs, ("resnet18:64", "resnet50:64"))
    self.assertEqual((c.study.distill.teacher, c.study.distill.students),
                     ("resnet50:64", ("resnet18:64",)))
    self.assertEqual(c.dataset.image_size, 224)
    self.assertEqual(c.evals.corruptions.table, "imagenet")
    self.assertEqual(c.evals.corruptions.names, ("benchmark",))
    np.testing.assert_allclose(np.asarray(c.evals.attacks.eps) * 255,
                               [0, 1, 2, 4, 8])
    self.assertEqual(c.study.notes, ())
    self.assertEqual(c.optimizer.learning_rate, 0.01)  # Fine-tuning.
    # The default study's grid, shared (configs/common.compression_grid).
    self.assertEqual((c.study.seeds, c.study.prune.sparsities,
                      c.study.prune.match_sizes,
                      c.study.quantize.weight_bits),
                     (3, (0.75,), True, (8, 4)))
    # One weights file cannot initialise both architectures.
    with self.assertRaisesRegex(ValueError, r"config.model.init='/w/r50."
                                r"safetensors' is not valid: the study "
                                r"trains resnet18, resnet50.*\{name\}"):
      validation.validate(office31_study.get_config("init=/w/r50.safetensors"))


if __name__ == "__main__":
  absltest.main()
