"""Models from configs: the one place that turns config fields into modules.

`build_model(config)` and `init_variables(model, config, rng)` serve training;
`arch_spec` / `build_from_spec` rebuild a saved model's architecture from the
small dict stored with it (e.g. a compressed model's metadata).
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp

from robustjax.data import registry as data_registry
from robustjax.models import pretrained
from robustjax.models import registry


def parse_arch(arch: str) -> Tuple[str, int]:
  """"resnet20:16" -> ("resnet20", 16); the width defaults to 16."""
  name, _, width = arch.partition(":")
  if not name:
    raise ValueError(f"Architecture {arch!r}: write 'name:width', e.g. "
                     "'resnet20:16'.")
  try:
    return name, int(width) if width else 16
  except ValueError:
    raise ValueError(f"Architecture {arch!r}: the width after ':' must be an "
                     "integer, e.g. 'resnet20:16'.") from None


def check_archs(field: str, archs: Sequence[str]) -> None:
  """Checks "name:width" strings of a config field against the registry.

  Args:
    field: the field's path in the config, for the message, e.g.
      "study.archs".
    archs: its value.

  Raises:
    ValueError: one sentence naming the field, its value, the registered
      models and the format.
  """
  for arch in archs:
    name, _, width = arch.partition(":")
    if name not in registry.MODELS or (width and not width.isdigit()):
      raise ValueError(
          f"config.{field}={tuple(archs)!r} is not valid: write 'name:width' "
          f"with a registered model ({', '.join(sorted(registry.MODELS))}) "
          "and an integer width, e.g. 'resnet20:16'.")


def arch_spec(config, arch: Optional[str] = None) -> Dict[str, Any]:
  """What rebuilds an architecture: name, width, num_classes, dataset.

  Args:
    config: a config (dataset and model fields are read).
    arch: "name:width"; default: `config.model.name` / `config.model.width`.
  """
  name, width = (parse_arch(arch) if arch else
                 (config.model.name, int(config.model.width)))
  spec = data_registry.get_spec(config.dataset.name)
  return dict(name=name, width=int(width), num_classes=int(spec.num_classes),
              dataset=config.dataset.name)


def build_from_spec(spec: Dict[str, Any], **ops):
  """The module of an `arch_spec` dict; `ops` e.g. `conv=`, `dense=`, `dtype=`."""
  data = data_registry.get_spec(spec["dataset"])
  return registry.get_model(spec["name"], num_classes=spec["num_classes"],
                            width=spec["width"], mean=data.mean, std=data.std,
                            **ops)


def build_model(config, arch: Optional[str] = None):
  """The config's model (or `arch`), with the dataset's normalisation."""
  dtype = jnp.bfloat16 if config.model.half_precision else jnp.float32
  return build_from_spec(arch_spec(config, arch), dtype=dtype)


def input_shape(config) -> Tuple[int, int, int, int]:
  """(1, H, W, C) of one input image of the config's dataset."""
  spec = data_registry.get_spec(config.dataset.name)
  size = config.dataset.image_size
  return (1, size, size, spec.channels)


def init_path(config) -> str:
  """`config.model.init` with "{name}" replaced by `config.model.name`.

  One setting then serves a study of several architectures, e.g.
  `/w/{name}.safetensors` -> `/w/resnet18.safetensors`, `/w/resnet50...`.
  """
  return config.model.init.replace("{name}", config.model.name)


def init_variables(model, config, rng) -> Dict[str, Any]:
  """Fresh variables for `model` (+ pretrained weights if `model.init`)."""
  # Not jitted: XLA:CPU is slow to compile a ResNet's init. Lazy: the
  # initializers run eagerly (the values `model.init` gives), the forward
  # pass is only traced, so its convolutions and normalisations are not
  # compiled op by op (a large part of a short study's compile time). In train
  # mode, so that normalisation has nothing to compute from its (known)
  # initial statistics either; the variables are the same.
  variables = model.lazy_init(
      rng, jax.ShapeDtypeStruct(input_shape(config), jnp.float32),
      train=True)
  variables = flax.core.unfreeze(variables)
  if config.model.init:
    variables = pretrained.load_into(init_path(config), variables)
  return variables
