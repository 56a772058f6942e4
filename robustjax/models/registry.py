"""Model registry: build any supported network by name."""

import functools
from typing import Any, Callable

from robustjax.models import input_grad
from robustjax.models import resnet

# CIFAR-style depths 6n + 2 -> blocks per stage n.
_CIFAR_DEPTHS = (8, 20, 32, 44, 56, 110)
# ImageNet-style depths -> (blocks per stage, block type).
_IMAGENET = {
    18: ((2, 2, 2, 2), resnet.BasicBlock),
    34: ((3, 4, 6, 3), resnet.BasicBlock),
    50: ((3, 4, 6, 3), resnet.BottleneckBlock),
    101: ((3, 4, 23, 3), resnet.BottleneckBlock),
    152: ((3, 8, 36, 3), resnet.BottleneckBlock),
}


def _cifar_resnet(depth, num_classes, width=16, **kwargs):
  n = (depth - 2) // 6
  return resnet.ResNet(stage_sizes=(n, n, n), block_cls=resnet.BasicBlock,
                       num_classes=num_classes, width=width, stem="cifar",
                       **kwargs)


def _imagenet_resnet(depth, num_classes, width=64, **kwargs):
  stages, block = _IMAGENET[depth]
  return resnet.ResNet(stage_sizes=stages, block_cls=block,
                       num_classes=num_classes, width=width, stem="imagenet",
                       **kwargs)


MODELS = {
    **{f"resnet{d}": functools.partial(_cifar_resnet, d)
       for d in _CIFAR_DEPTHS},
    **{f"resnet{d}": functools.partial(_imagenet_resnet, d) for d in _IMAGENET},
}


def get_model(name: str, num_classes: int, **kwargs: Any):
  """Returns the Flax module registered as `name`.

  Args:
    name: `resnet{8,20,32,44,56,110}` (CIFAR-style, 3x3 stem, width default
      16) or `resnet{18,34,50,101,152}` (ImageNet-style, torchvision layout,
      width default 64).
    num_classes: classifier outputs.
    **kwargs: module attributes, e.g. `width`, `mean`, `std`, `conv`, `dense`.

  Returns:
    A `flax.linen.Module`; `module.apply(variables, images, train=False)`
    returns logits.
  """
  if name not in MODELS:
    raise ValueError(
        f"Unknown model {name!r}. Registered models: "
        f"{', '.join(sorted(MODELS, key=lambda n: int(n[6:])))}. Set "
        "config.model.name to one of these.")
  return MODELS[name](num_classes, **kwargs)


def check_config(model) -> None:
  """Checks `config.model.name` against the registry, before any work.

  Args:
    model: the config's `model` block.

  Raises:
    ValueError: one sentence naming the value and the registered models.
  """
  if model.name not in MODELS:
    raise ValueError(f"config.model.name={model.name!r} is not valid: "
                     f"registered models are {', '.join(sorted(MODELS))}.")


@functools.lru_cache(maxsize=256)
def _shared_inference_fn(model) -> Callable[..., Any]:
  return functools.partial(input_grad.for_input_gradients(model).apply,
                           train=False)


def inference_fn(model) -> Callable[..., Any]:
  """The one calling convention of the suite: `logits = fn(variables, x)`.

  BatchNorm uses running statistics and nothing is mutated, so evaluators and
  attacks can treat every model (float, pruned, quantized) alike.

  Linen modules compare and hash by value (their attributes), so equal
  modules get the same function object and jitted evaluators and attacks
  (cached per function) compile once per architecture, not once per model.
  A module with an unhashable attribute (e.g. a list, or an injected op that
  is not hashable) gets a fresh function: correct, only not shared.

  A model with flax's default `nn.Conv` runs with
  `robustjax.models.input_grad.Conv` instead: the same parameters and
  logits, and input gradients (attacks) that are faster on CPU.

  Args:
    model: a Flax Linen module with a `train` argument.

  Returns:
    `fn(variables, images) -> logits`.
  """
  try:
    hash(model)
  except TypeError:
    return functools.partial(input_grad.for_input_gradients(model).apply,
                             train=False)
  return _shared_inference_fn(model)
