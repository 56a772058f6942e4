"""The names a resolved config gives, checked by the registries that own them.

`configs/validation.validate` checks what each value may be on its own (types,
ranges, fields that refer to each other) without importing the library;
`check_config` checks every name against the registry that resolves it:
`config.dataset` by the dataset registry, `config.model` and the study's
"name:width" architectures by the model registry, and `config.evals`
(attacks, corruptions, another dataset's shifts) by the evaluators, each
once. The launchers call both right after loading the config
(launch/common.load_config), so an unknown name ends the run with one
sentence that lists the valid ones, before any training starts.
"""

from robustjax.data import registry as data_registry
from robustjax.models import factory
from robustjax.models import registry as model_registry
from robustjax.robustness import evaluators


def check_config(config):
  """Checks every registry name of a config, before any work.

  Args:
    config: a config built on `configs/common.get_base_config`.

  Returns:
    `config`, unchanged.

  Raises:
    ValueError: one sentence naming the field, its value and what is valid.
  """
  data_registry.check_config(config.dataset)
  model_registry.check_config(config.model)
  factory.check_archs("study.archs", config.study.archs)
  factory.check_archs("study.distill.students", config.study.distill.students)
  evaluators.check_evals(config.evals)
  return config
