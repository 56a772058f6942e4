"""README's set-up commands, generated pages and links stay honest.

`.ci/run` runs README's second command (the tests) verbatim, so CI tries
exactly what a user types.

The block between `<!-- results:begin -->` and `<!-- results:end -->` in
README.md and the runtime page docs/results/default/runtimes.md are written
by `python -m robustjax.study.summary --results=docs/results/default10
--replicate=docs/results/default10_seed1 --quick=docs/results/default
--readme=README.md` from the committed journals and timings of the default
grid (10 seeds, its replication with another base seed, and README command
(1)'s 3 seeds); regenerating them here must give the same text.

Every relative link in README.md and BUILD.md must name a file or folder of
the checkout (and a heading, where it names one).
"""

import os
import re

from absl.testing import absltest

from robustjax.study import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("docs", "results", "default10")
REPLICATE = os.path.join("docs", "results", "default10_seed1")
QUICK = os.path.join("docs", "results", "default")


class ReadmeTest(absltest.TestCase):

  def test_committed_results_are_complete(self):
    for folder in (RESULTS, REPLICATE, QUICK):
      for name in ("journal.jsonl", "config.json", "environment.json",
                   "progress.json", "report.md", "plots/claims_forest.png"):
        self.assertTrue(os.path.exists(os.path.join(ROOT, folder, name)),
                        os.path.join(folder, name))

  def test_readme_block_and_runtime_page_match_the_committed_results(self):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      expected = summary.outputs("README.md", RESULTS, replicate=REPLICATE,
                                 quick=QUICK)
      current = {}
      for path in expected:
        with open(path) as f:
          current[path] = f.read()
    finally:
      os.chdir(cwd)
    self.assertEqual(sorted(expected), sorted(
        ["README.md", os.path.join(QUICK, "runtimes.md")]))
    for path, text in expected.items():
      self.assertEqual(current[path], text,
                       f"{path} is stale: run python -m "
                       f"robustjax.study.summary --results={RESULTS} "
                       f"--replicate={REPLICATE} --quick={QUICK} "
                       "--readme=README.md")


def _slug(heading: str) -> str:
  """GitHub's anchor of a markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: str) -> set:
  with open(path) as f:
    text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
  return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


class LinksTest(absltest.TestCase):

  def test_every_relative_link_resolves(self):
    for doc in ("README.md", "BUILD.md"):
      with open(os.path.join(ROOT, doc)) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
      links = re.findall(r"\]\(([^)\s]+)\)", text)
      self.assertNotEmpty(links, doc)
      for link in links:
        if re.match(r"[a-z]+:", link):  # http(s), mailto: not checked here.
          continue
        target, _, anchor = link.partition("#")
        path = os.path.join(ROOT, target) if target else os.path.join(
            ROOT, doc)
        self.assertTrue(os.path.exists(path),
                        f"{doc} links to {link}, which does not exist")
        if anchor:
          self.assertIn(anchor, _anchors(path),
                        f"{doc} links to {link}: no such heading")

  def test_slugs(self):
    self.assertEqual(_slug("TPU VM"), "tpu-vm")
    self.assertEqual(_slug("CPU speed: what is on, and how to turn it off"),
                     "cpu-speed-what-is-on-and-how-to-turn-it-off")


class SetupCommandsTest(absltest.TestCase):

  def test_readme_starts_with_two_commands_and_ci_runs_the_second(self):
    with open(os.path.join(ROOT, "README.md")) as f:
      readme = f.read()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    self.assertGreaterEqual(len(blocks), 2)
    study, tests = (b.strip() for b in blocks[:2])
    self.assertIn("launch/study.py --config=configs/default.py", study)
    self.assertIn("pytest", tests)
    # They are the README's first code blocks: what a user sees first.
    self.assertEqual(readme.index("```"), readme.index("```bash\n" + study))
    with open(os.path.join(ROOT, ".ci", "run")) as f:
      ci = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    self.assertIn(tests, ci, ".ci/run must run README's test command as "
                  "written")


if __name__ == "__main__":
  absltest.main()
