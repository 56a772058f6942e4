"""The package's import layers: imports only run down, no lazy imports.

Order (lowest first): leaves (parallel, cpu_setup, platform_info, io,
checkpoint, progress), data, models, robustness, train, compress, study. A
module may import robustjax modules of its own layer or below, at module
level only.
"""

import ast
import os

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "robustjax")
LAYERS = ("leaf", "data", "models", "robustness", "train", "compress",
          "study")


def _layer(module: str) -> int:
  """Layer index of a dotted robustjax module name."""
  parts = module.split(".")
  if len(parts) == 1 or parts[1] not in LAYERS:
    return 0  # robustjax, robustjax.parallel, .cpu_setup, .io, .progress, ...
  return LAYERS.index(parts[1])


def _modules():
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield rel.removesuffix(".__init__"), path


def _imports(tree):
  """(imported robustjax module, at module level?) for every import."""
  top = set(id(n) for n in tree.body)
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module + "." + a.name for a in node.names] + [node.module]
    for n in names:
      if n.startswith("robustjax"):
        yield n, id(node) in top


class LayersTest(absltest.TestCase):

  def test_modules_are_found(self):
    names = dict(_modules())
    for m in ("robustjax.train.trainer", "robustjax.study.runner",
              "robustjax.robustness.attacks", "robustjax.io",
              "robustjax.cpu_setup"):
      self.assertIn(m, names)

  def test_imports_run_down_the_layers_at_module_level(self):
    problems = []
    for module, path in _modules():
      with open(path) as f:
        tree = ast.parse(f.read())
      for imported, top_level in _imports(tree):
        if not top_level:
          problems.append(f"{module}: lazy import of {imported}")
        elif _layer(imported) > _layer(module):
          problems.append(f"{module} ({LAYERS[_layer(module)]}) imports "
                          f"{imported} ({LAYERS[_layer(imported)]})")
    self.assertEqual(problems, [])

  def test_the_check_catches_an_upward_import(self):
    tree = ast.parse("from robustjax.study import runner\n")
    (imported, top), = [x for x in _imports(tree) if x[0].endswith("study")]
    self.assertTrue(top)
    self.assertGreater(_layer(imported), _layer("robustjax.train.trainer"))
    lazy = ast.parse("def f():\n  from robustjax import io\n")
    self.assertEqual({t for _, t in _imports(lazy)}, {False})


if __name__ == "__main__":
  absltest.main()
