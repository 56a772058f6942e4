"""Runs colab/robustness_study.ipynb as Colab would, so it cannot rot.

Colab starts a fresh kernel on a runtime that already has a Python stack,
then the notebook's first cell pip-installs robustjax from the repository.
This test does the same with the commit under test (uncommitted changes are
not seen):

1. `git clone` this checkout into a temporary folder, at HEAD;
2. a fresh virtual environment whose site-packages *see* this test's
   environment (a `.pth` line: the "preinstalled runtime"), without its
   path set-up: neither this checkout nor an installed robustjax is
   importable in it;
3. a Jupyter kernel in that environment, started in an empty folder (like
   Colab's /content), runs every cell of the committed notebook with
   `ROBUSTJAX_LOCAL_CLONE` pointing at the clone, so the first cell installs
   the clone (non-editable, with the runtime's extra) instead of the URL.

Dependencies are already there, so the install downloads nothing but the
build backend. The notebook itself is not modified.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from absl.testing import absltest
import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join("colab", "robustness_study.ipynb")
KERNEL = "robustjax-colab-test"


def _git(*args, cwd=REPO):
  return subprocess.run(["git", *args], cwd=cwd, check=True,
                        capture_output=True, text=True).stdout.strip()


def clone_head(dest: str) -> str:
  """Clones this checkout's HEAD commit into `dest`; returns the commit."""
  commit = _git("rev-parse", "HEAD")
  _git("clone", "--quiet", "--no-checkout", REPO, dest, cwd=None)
  _git("checkout", "--quiet", commit, cwd=dest)
  return commit


def runtime_env(root: str) -> str:
  """A venv in `root` that sees this environment's packages; its python."""
  subprocess.run([sys.executable, "-m", "venv", root], check=True,
                 capture_output=True)
  python = os.path.join(root, "bin", "python")
  site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
      check=True, capture_output=True, text=True).stdout.strip()
  # A plain path line: this environment's packages import, but its own .pth
  # files (an editable robustjax, path tricks) are not run.
  with open(os.path.join(site, "preinstalled_runtime.pth"), "w") as f:
    f.write(sysconfig.get_path("purelib") + "\n")
  return python


def kernelspec(jupyter_dir: str, python: str, env: dict) -> None:
  """Declares a kernel running `python` with `env` under `jupyter_dir`."""
  folder = os.path.join(jupyter_dir, "kernels", KERNEL)
  os.makedirs(folder)
  with open(os.path.join(folder, "kernel.json"), "w") as f:
    json.dump({"argv": [python, "-m", "ipykernel_launcher", "-f",
                        "{connection_file}"],
               "display_name": "robustjax colab test", "language": "python",
               "env": env}, f)


def execute(notebook_path: str, clone: str, workdir: str, scratch: str,
            timeout: int = 900) -> nbformat.NotebookNode:
  """Runs the notebook as Colab would (see the module docstring)."""
  python = runtime_env(os.path.join(scratch, "runtime"))
  jupyter_dir = os.path.join(scratch, "jupyter")
  content = os.path.join(scratch, "content")  # Colab's working folder.
  os.makedirs(content)
  kernelspec(jupyter_dir, python, {
      "ROBUSTJAX_LOCAL_CLONE": clone,
      "ROBUSTJAX_COLAB_WORKDIR": workdir,
      "ROBUSTJAX_RUNTIME": "cpu",
      "PIP_DISABLE_PIP_VERSION_CHECK": "1",
      "PYTHONPATH": ""})
  nb = nbformat.read(notebook_path, as_version=4)
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = jupyter_dir
  try:
    nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL,
        resources={"metadata": {"path": content}}).execute()
  finally:
    if old is None:
      os.environ.pop("JUPYTER_PATH", None)
    else:
      os.environ["JUPYTER_PATH"] = old
  return nb


class ColabTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not os.path.isdir(os.path.join(REPO, ".git")) and not os.path.isfile(
        os.path.join(REPO, ".git")):
      self.skipTest(f"{REPO} is not a git checkout: nothing to clone.")
    self.scratch = tempfile.mkdtemp(prefix="robustjax_colab_")
    self.addCleanup(shutil.rmtree, self.scratch, ignore_errors=True)

  def test_notebook_runs_from_a_clone(self):
    clone = os.path.join(self.scratch, "robustjax")
    clone_head(clone)
    workdir = os.path.join(self.scratch, "workdir")
    nb = execute(os.path.join(clone, NOTEBOOK), clone, workdir, self.scratch)
    outputs = [o for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    self.assertFalse([o for o in outputs if o.output_type == "error"])
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}))
                   for o in outputs)
    self.assertIn("Runtime: cpu. Installing " + clone, text)
    self.assertNotIn("RESTART NEEDED", text)
    # Installed from the clone, not imported from this checkout.
    self.assertIn("robustjax 0.1.0 installed; runtime: cpu", text)
    self.assertTrue(os.path.exists(os.path.join(workdir, "report.md")))
    self.assertTrue(os.path.exists(os.path.join(workdir, "log.txt")))
    self.assertIn("result rows in", text)
    self.assertLen(_verdicts(text), 4, "one verdict per claim of the paper")
    self.assertIn("image/png", text)

  def test_committed_notebook_shows_claims_and_plots(self):
    nb = nbformat.read(os.path.join(REPO, NOTEBOOK), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}))
                   for o in outputs)
    self.assertFalse([o for o in outputs if o.output_type == "error"])
    self.assertLen(_verdicts(text), 4, "the committed run's claims")
    self.assertIn("image/png", text)


def _verdicts(text):
  return re.findall(r"\*\*(SUPPORTED|CONTRADICTED|MIXED|INCONCLUSIVE|"
                    r"NOT TESTABLE)\*\*", text)


if __name__ == "__main__":
  absltest.main()
