"""benchmarks/accelerator_check.py's `--dry_run` runs every section on CPU.

Not a test of speed: the dry run (tiny model, one or two steps, one
corruption, 16 px, a tiny study) must write a JSON document with every
section, no section's error, and numbers where the accelerator run puts its
figures, plus the markdown table; and the peak table gives MFU only for the
device kinds it knows.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "accelerator_check.py")


def _positive(test, value, what):
  test.assertIsInstance(value, (int, float), what)
  test.assertTrue(math.isfinite(value) and value > 0, f"{what}: {value}")


class AcceleratorCheckDryRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.out = tempfile.mkdtemp()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    cls.proc = subprocess.run(
        [sys.executable, SCRIPT, f"--out={cls.out}", "--dry_run"], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=600)
    with open(os.path.join(cls.out, "accelerator_check.json")) as f:
      cls.doc = json.load(f)
    cls.sections = cls.doc["sections"]

  def test_every_section_ran_without_error(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
    self.assertTrue(self.doc["dry_run"])
    self.assertEqual(list(self.sections), [
        "versions", "devices", "xla", "archs", "members", "corruptions",
        "pgd", "pipeline", "study"])
    for name, section in self.sections.items():
      self.assertNotIn("error", section, f"{name}: {section.get('error')}")
      self.assertIn("seconds", section)
      self.assertIn("truncated", section)

  def test_environment_sections(self):
    self.assertTrue(self.sections["versions"]["jax"])
    self.assertTrue(self.sections["versions"]["python"])
    devices = self.sections["devices"]
    self.assertEqual(devices["platform"], "cpu")
    self.assertGreaterEqual(devices["count"], 1)
    xla = self.sections["xla"]
    self.assertEqual(xla["default_backend"], "cpu")
    self.assertEqual(xla["with_cpu_flags"]["returncode"], 0)

  def test_figures_are_numbers(self):
    rows = self.sections["archs"]["rows"]
    self.assertNotEmpty(rows)
    for row in rows:
      for program in ("train", "eval"):
        _positive(self, row[program]["img_s"], f"{row} {program} img/s")
        _positive(self, row[program]["compile_s"], f"{row} {program}")
        self.assertIsNone(row[program].get("mfu"))  # No CPU peak in the table.
    self.assertEqual(rows[0]["precision"], "f32")
    for row in self.sections["members"]["rows"]:
      _positive(self, row["stacked_img_s"], "members")
      _positive(self, row["sequential_img_s"], "members")
    self.assertNotEmpty(self.sections["members"]["rows"])
    corr = self.sections["corruptions"]
    _positive(self, corr["cifar_all_img_s"], "corruptions 32")
    _positive(self, corr["imagenet_all_img_s"], "corruptions 224")
    for name in ("pgd", "pipeline"):
      self.assertNotEmpty(self.sections[name]["rows"], name)
    _positive(self, self.sections["pgd"]["rows"][0]["img_s"], "pgd")
    self.assertEqual([r["models"] for r in self.sections["pgd"]["rows"]],
                     [1, 2])
    _positive(self, self.sections["pgd"]["rows"][1]["speedup"], "pgd K")
    _positive(self, self.sections["pipeline"]["rows"][0]["host_ms_per_step"],
              "pipeline")
    study = self.sections["study"]
    _positive(self, study["wall_s"], "study")
    self.assertGreaterEqual(study.get("timing_segments", 0), 1, study)

  def test_markdown_table(self):
    with open(os.path.join(self.out, "accelerator_check.md")) as f:
      md = f.read()
    self.assertIn("# Accelerator check (dry run)", md)
    for name in self.sections:
      self.assertIn(f"| {name} |", md)
    self.assertIn("| architecture | precision |", md)


class PeakTableTest(absltest.TestCase):

  def test_known_and_unknown_kinds(self):
    spec = importlib.util.spec_from_file_location("accelerator_check_peaks",
                                                  SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    self.assertEqual(module.peak_flops("NVIDIA H100 80GB HBM3", "bf16"),
                     989e12)
    self.assertEqual(module.peak_flops("NVIDIA H200", "tf32"), 494e12)
    self.assertEqual(module.peak_flops("NVIDIA H100 80GB HBM3", "f32"), 67e12)
    self.assertIsNone(module.peak_flops("NVIDIA H100 PCIe", "bf16"))
    self.assertIsNone(module.peak_flops("cpu", "f32"))


if __name__ == "__main__":
  absltest.main()
