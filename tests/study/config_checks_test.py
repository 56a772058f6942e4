"""The registries' checks of a config's names (robustjax.study.config_checks)."""

from absl.testing import absltest
from absl.testing import parameterized

from configs import default
from configs import validation
from robustjax.study import config_checks


class ConfigChecksTest(parameterized.TestCase):

  def test_shipped_names_pass(self):
    for arg in (None, "runlocal"):
      c = default.get_config(arg)
      self.assertIs(config_checks.check_config(c), c)

  @parameterized.parameters(
      ("dataset.name", "digitz", r"^config.dataset.name='digitz' is not "
       r"valid: registered datasets are cifar10, cifar10_corrupted, digits, "
       r"domainnet, office31\.$"),
      ("model.name", "resnet9", r"^config.model.name='resnet9' is not valid: "
       r"registered models are resnet101, .*resnet8\.$"),
      ("study.archs", ("resnet8:8", "resnet8:12", "resnet8:16", "resnet9:8"),
       r"^config.study.archs=\('resnet8:8', 'resnet8:12', 'resnet8:16', "
       r"'resnet9:8'\) is not valid: write 'name:width' with a "
       r"registered model \(resnet101, .*\) and an integer width, e\.g\. "
       r"'resnet20:16'\.$"),
      ("study.distill.students", ("resnet8:x",), r"^config.study.distill."
       r"students=\('resnet8:x',\) is not valid: write 'name:width'"),
      ("evals.corruptions.names", ("fogg",), r"^evals.corruptions.names "
       r"names an unknown corruption 'fogg'; valid names: gaussian_noise, "
       r".*, or benchmark for the 15 benchmark corruptions\.$"),
      ("evals.attacks.names", ("cw",), r"^evals.attacks.names names an "
       r"unknown attack 'cw'; valid names: fgsm, pgd_l2, pgd_linf\.$"),
  )
  def test_unknown_names_list_the_valid_ones(self, field, value, message):
    c = default.get_config()
    *parents, leaf = field.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
    validation.validate(c)  # Well-typed values: only the registries object.
    with self.assertRaisesRegex(ValueError, message):
      config_checks.check_config(c)


if __name__ == "__main__":
  absltest.main()
