"""Tests of benchmarks/device_kit.py: the offline install line, no network.

The wheels are built here (two tiny hand-made wheels), installed with the
exact line the kit prints (`device_kit.install_line`, run by bash), and
imported in the same shell through the exported PYTHONPATH.
"""

import base64
import hashlib
import importlib.util
import os
import sys
import tempfile
import tomllib
import zipfile

from absl.testing import absltest
from packaging import requirements as requirements_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_kit():
  spec = importlib.util.spec_from_file_location(
      "device_kit", os.path.join(ROOT, "benchmarks", "device_kit.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


device_kit = _load_kit()


def _record_line(path: str, data: bytes) -> str:
  digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
  return f"{path},sha256={digest.rstrip(b'=').decode()},{len(data)}"


def build_wheel(folder: str, name: str, version: str, files: dict) -> str:
  """Writes a pure-python wheel `name` holding `files` {path: text}."""
  dist_info = f"{name}-{version}.dist-info"
  contents = {path: text.encode() for path, text in files.items()}
  contents[f"{dist_info}/METADATA"] = (
      f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
      "Requires-Dist: some-absent-dependency\n").encode()
  contents[f"{dist_info}/WHEEL"] = (
      b"Wheel-Version: 1.0\nGenerator: device_kit_test\n"
      b"Root-Is-Purelib: true\nTag: py3-none-any\n")
  record = [_record_line(p, d) for p, d in contents.items()]
  record.append(f"{dist_info}/RECORD,,")
  contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
  path = os.path.join(folder, f"{name}-{version}-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as z:
    for p, d in contents.items():
      z.writestr(p, d)
  return path


class DeviceKitTest(absltest.TestCase):

  def _env(self):
    """This interpreter first on PATH, as `python` is on the image."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env.pop("PYTHONPATH", None)
    env["PIP_NO_INDEX"] = "1"  # Belt and braces: the line says --no-index.
    return env

  def test_install_line_installs_offline_and_imports(self):
    repo = self.create_tempdir().full_path  # Stands for the repo root.
    kit = os.path.join(repo, "kit")
    os.makedirs(kit)
    build_wheel(kit, "kit_probe_a", "1.0",
                {"kit_probe_a/__init__.py": "VALUE = 'a'\n",
                 "kit_probe_a/data/table.csv": "1,2\n"})
    build_wheel(kit, "kit_probe_b", "2.0",
                {"kit_probe_b.py": "import kit_probe_a\n"
                                   "VALUE = kit_probe_a.VALUE + 'b'\n"})
    with open(os.path.join(repo, "repo_module.py"), "w") as f:
      f.write("VALUE = 'repo'\n")
    check = ("python -c \"import os, kit_probe_a, kit_probe_b, repo_module, "
             "absl; print(kit_probe_b.VALUE, repo_module.VALUE, "
             "os.path.exists(os.path.join(os.path.dirname("
             "kit_probe_a.__file__), 'data', 'table.csv')), "
             "kit_probe_a.__file__.startswith(os.path.join(os.getcwd(), "
             "'kit', 'site')), absl.__file__.startswith(os.path.join("
             "os.getcwd(), 'kit')))\"")
    # The printed line uses the relative default, run from the repo root.
    result = device_kit.install("kit", cwd=repo, then=check, env=self._env())
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.split(), ["ab", "repo", "True", "True",
                                             "False"])
    site = os.path.join(kit, "site")
    self.assertCountEqual(
        [n for n in os.listdir(site) if not n.endswith(".dist-info")],
        ["kit_probe_a", "kit_probe_b.py"])

  def test_install_line_shape(self):
    line = device_kit.install_line("kit")
    self.assertStartsWith(line, "python -m pip install --no-index --no-deps ")
    self.assertIn("--target kit/site kit/*.whl && ", line)
    self.assertEndsWith(
        line, 'export PYTHONPATH="$PWD/kit/site:$PWD${PYTHONPATH:+:'
        '$PYTHONPATH}"')
    self.assertIn("--target /k/site /k/*.whl",
                  device_kit.install_line("/k"))
    self.assertIn('PYTHONPATH="/k/site:', device_kit.install_line("/k"))

  def test_refuses_a_wheel_the_image_has(self):
    with tempfile.TemporaryDirectory() as kit:
      build_wheel(kit, "jax", "0.0.1", {"jax/__init__.py": ""})
      with self.assertRaisesRegex(ValueError, "jax-0.0.1"):
        device_kit.install(kit)
      self.assertFalse(os.path.exists(os.path.join(kit, "site")))

  def test_every_kit_wheel_is_pinned_and_none_is_on_the_image(self):
    pins = device_kit.pins()
    kit = [device_kit.normalize(n) for n in device_kit.KIT]
    self.assertEqual([n for n in kit if n not in pins], [])
    self.assertLen(set(kit), len(kit))
    image = {device_kit.normalize(n) for n in device_kit.IMAGE}
    self.assertEqual(set(kit) & image, set())
    self.assertEqual(pins["tensorflow-datasets"], "4.9.10")
    self.assertEqual(pins["jax"], "0.10.2")

  def test_build_md_lists_the_kit_with_its_locked_versions(self):
    with open(os.path.join(ROOT, "BUILD.md")) as f:
      text = " ".join(f.read().split())
    pins = device_kit.pins()
    missing = [f"{n} {pins[device_kit.normalize(n)]}" for n in device_kit.KIT
               if f"{n} {pins[device_kit.normalize(n)]}" not in text]
    self.assertEqual(missing, [], "BUILD.md's offline GPU box paragraph")

  def test_jax_ranges_accept_the_lock_and_the_gpu_image(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      project = tomllib.load(f)["project"]
    requirements = [requirements_lib.Requirement(r) for r in (
        project["dependencies"]
        + sum(project["optional-dependencies"].values(), []))]
    jax = [r for r in requirements if r.name in ("jax", "jaxlib")]
    self.assertLen(jax, 5)  # jax, jaxlib, [gpu], [gpu-cuda13], [tpu].
    lock = device_kit.pins()["jax"]
    for r in jax:
      self.assertIn(lock, r.specifier, str(r))
      self.assertIn("0.11.2", r.specifier, str(r))  # The offline GPU image.

  def test_kit_folder_is_git_ignored(self):
    with open(os.path.join(ROOT, ".gitignore")) as f:
      self.assertIn(f"/{device_kit.DEFAULT_DEST}/", f.read().split())


if __name__ == "__main__":
  absltest.main()
