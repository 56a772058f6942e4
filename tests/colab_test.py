"""Executes colab/robustness_study.ipynb (runlocal study) so it cannot rot."""

import os
import tempfile

from absl.testing import absltest
import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ColabTest(absltest.TestCase):

  def test_notebook_runs(self):
    path = os.path.join(REPO, "colab", "robustness_study.ipynb")
    nb = nbformat.read(path, as_version=4)
    workdir = tempfile.mkdtemp()
    os.environ["ROBUSTJAX_COLAB_WORKDIR"] = workdir
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3",
        resources={"metadata": {"path": os.path.join(REPO, "colab")}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    self.assertFalse([o for o in outputs if o.output_type == "error"])
    self.assertTrue(os.path.exists(os.path.join(workdir, "report.md")))
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}))
                   for o in outputs)
    self.assertIn("result rows in", text)
    self.assertIn("image/png", text)


if __name__ == "__main__":
  absltest.main()
