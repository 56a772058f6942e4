"""Pretrained ImageNet initialisation from torchvision-layout ResNet weights.

Converts ResNet-18/34/50/101/152 state dicts in the torchvision layout (also
used by timm's ResNets; names and layouts in `torch_layout`) into robustjax
variables (`params` + `batch_stats`) of the ImageNet-style models in
`resnet.py`, and checks them against the model they initialise: the same
architecture, depth and width, every tensor in place, the same shapes.

Supported inputs: `.safetensors` (read with `safetensors.numpy`, no torch
needed), `.pth`/`.pt` (needs torch), and a directory written by
`launch/convert_weights.py` (`convert_file`). `load_into` is what the trainer
calls for `config.model.init`: every backbone tensor comes from the file; a
classifier head of a different size (another number of classes) is replaced
by the model's fresh one. See docs/pretrained.md.
"""

import hashlib
import json
import os
import re
from typing import Any, Dict, NamedTuple, Optional, Tuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import checkpoint
from robustjax import io
from robustjax.models import registry
from robustjax.models import resnet
from robustjax.models import torch_layout

Key = torch_layout.Key

FORMAT = "robustjax-pretrained"  # `metadata.json` marker of converted dirs.
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
_COLLECTIONS = ("params", "batch_stats")
_MAX_LISTED = 8  # Names listed in an error message before "... and N more".

# depth -> (blocks per stage, block class) of the registry's ImageNet ResNets.
_IMAGENET_DEPTHS = registry._IMAGENET  # pylint: disable=protected-access


class Architecture(NamedTuple):
  """What a set of ResNet variables describes (None: not determinable)."""
  stem: Optional[str]  # "imagenet" (7x7 conv) or "cifar" (3x3 conv).
  block: Optional[str]  # "basic" or "bottleneck".
  stage_sizes: Tuple[int, ...]
  width: Optional[int]  # Channels of the stem / first stage.
  in_channels: Optional[int]
  num_classes: Optional[int]

  @property
  def name(self) -> str:
    """The registry name (`resnet50`), or a description if none fits."""
    if self.stem == "imagenet":
      for depth, (stages, block_cls) in _IMAGENET_DEPTHS.items():
        block = "basic" if block_cls is resnet.BasicBlock else "bottleneck"
        if tuple(stages) == self.stage_sizes and block == self.block:
          return f"resnet{depth}"
    if (self.stem == "cifar" and self.block == "basic" and
        len(self.stage_sizes) == 3 and len(set(self.stage_sizes)) == 1):
      return f"resnet{6 * self.stage_sizes[0] + 2}"
    return "an unregistered ResNet"

  def summary(self) -> str:
    stages = "-".join(map(str, self.stage_sizes)) or "?"
    return (f"{self.name} ({self.stem or '?'} stem, {self.block or '?'} "
            f"blocks {stages}, width {self.width}, {self.in_channels} input "
            f"channels, {self.num_classes} classes)")


# ---------------------------------------------------------------------------
# Checks against the model.


def _show(key: Key, torch_names: bool) -> str:
  ours = "/".join(key)
  return f"{torch_layout.torch_name(key)} ({ours})" if torch_names else ours


def _listing(keys, torch_names: bool) -> str:
  keys = sorted(keys)
  shown = ", ".join(_show(k, torch_names) for k in keys[:_MAX_LISTED])
  more = len(keys) - _MAX_LISTED
  return shown + (f", ... and {more} more" if more > 0 else "")


def _flat(variables) -> Dict[Key, Any]:
  variables = flax.core.unfreeze(variables)
  return flax.traverse_util.flatten_dict(
      {c: variables[c] for c in _COLLECTIONS if c in variables})


def describe(variables) -> Architecture:
  """The architecture of robustjax ResNet variables (shapes suffice).

  Args:
    variables: `{"params": ..., "batch_stats": ...}`; leaves may be arrays or
      `jax.ShapeDtypeStruct`s.

  Returns:
    An `Architecture`; fields that cannot be determined are None.
  """
  flat = _flat(variables)
  stem = width = in_channels = num_classes = None
  kernel = flat.get(("params", "conv_init", "kernel"))
  if kernel is not None and len(kernel.shape) == 4:
    stem = {7: "imagenet", 3: "cifar"}.get(kernel.shape[0])
    in_channels, width = kernel.shape[2], kernel.shape[3]
  head = flat.get(("params", torch_layout.HEAD, "kernel"))
  if head is not None and len(head.shape) == 2:
    num_classes = head.shape[1]
  blocks, bottleneck = {}, False
  for key in flat:
    m = re.fullmatch(r"stage(\d+)_block(\d+)", key[1])
    if m:
      blocks.setdefault(int(m[1]), set()).add(int(m[2]))
      bottleneck |= key[2] in ("conv3", "bn3")
  stages = tuple(len(blocks[i]) for i in sorted(blocks))
  block = ("bottleneck" if bottleneck else "basic") if blocks else None
  return Architecture(stem, block, stages, width, in_channels, num_classes)


def _check_architecture(found: Architecture, expected: Architecture,
                        source: str) -> None:
  """Raises a ValueError naming both architectures if they differ."""
  differences = [
      f"{field.replace('_', ' ')} {getattr(found, field)} in the file vs "
      f"{getattr(expected, field)} in the model"
      for field in ("stem", "block", "stage_sizes", "width", "in_channels")
      if None not in (getattr(found, field), getattr(expected, field))
      and getattr(found, field) != getattr(expected, field)]
  if not differences:
    return
  hint = ""
  if expected.stem == "cifar":
    hint = (" The model is CIFAR-style (3x3 stem); torchvision weights need "
            "an ImageNet-style model: set config.model.name to one of "
            "resnet18/34/50/101/152 and config.model.width=64.")
  elif found.in_channels != expected.in_channels:
    hint = (" The dataset's images have a different number of channels than "
            "the pretrained stem.")
  else:
    hint = (f" These weights fit model {found.name} with width {found.width} "
            "(config.model.name / config.model.width); otherwise use weights "
            f"of {expected.name}.")
  raise ValueError(
      f"Architecture mismatch: the pretrained weights in {source} are "
      f"{found.summary()}, but the model expects {expected.summary()} "
      f"({'; '.join(differences)}).{hint}")


def merge_into(pretrained, variables, source: str = "the pretrained weights",
               torch_names: bool = True):
  """Puts `pretrained` variables into `variables`, checking everything.

  Args:
    pretrained: converted variables (`torch_layout.convert_state_dict`) of a
      ResNet.
    variables: the model's freshly initialised variables (arrays or
      `jax.ShapeDtypeStruct`s); defines the expected names, shapes and dtypes.
    source: where `pretrained` came from, for messages.
    torch_names: name tensors in errors by their torchvision names too.

  Returns:
    `variables` with every `params`/`batch_stats` leaf taken from
    `pretrained` (as numpy, cast to the model's dtype), except the classifier
    head when its number of classes differs or the file has none (a
    backbone-only file): then the fresh head is kept.
    Other collections are returned unchanged.

  Raises:
    ValueError: a different architecture or width, missing or unexpected
      tensors, or shape mismatches outside the classifier head.
  """
  variables = flax.core.unfreeze(variables)
  found, expected = describe(pretrained), describe(variables)
  _check_architecture(found, expected, source)
  have, want = _flat(pretrained), _flat(variables)
  head_keys = {k for k in want if k[1] == torch_layout.HEAD}
  missing, unexpected = set(want) - set(have), set(have) - set(want)
  headless = bool(missing) and missing == head_keys  # A backbone-only file.
  if (missing and not headless) or unexpected:
    parts = []
    if missing:
      parts.append(f"{len(missing)} tensors the model needs are missing from "
                   f"the file: {_listing(missing, torch_names)}")
    if unexpected:
      parts.append(f"{len(unexpected)} tensors in the file have no place in "
                   f"the model: {_listing(unexpected, torch_names)}")
    raise ValueError(
        f"The pretrained weights in {source} ({found.summary()}) do not fit "
        f"the model ({expected.summary()}): {'; '.join(parts)}.")
  mismatched = {k for k in want if k in have
                and tuple(have[k].shape) != tuple(want[k].shape)}
  other_head = bool(mismatched) and mismatched <= head_keys and all(
      have[k].shape[:-1] == want[k].shape[:-1] for k in mismatched)
  if mismatched and not other_head:
    shown = ", ".join(
        f"{_show(k, torch_names)}: file {tuple(have[k].shape)} vs model "
        f"{tuple(want[k].shape)}" for k in sorted(mismatched)[:_MAX_LISTED])
    raise ValueError(
        f"Shape mismatch between the pretrained weights in {source} "
        f"({found.summary()}) and the model ({expected.summary()}): {shown}"
        f"{' ...' if len(mismatched) > _MAX_LISTED else ''}.")
  replace_head = headless or other_head
  if replace_head:
    logging.info(
        "Head replacement: %s has %s, the model %d classes; keeping the "
        "freshly initialised head, every other tensor comes from the file.",
        source, "no classifier" if headless else
        f"a {found.num_classes}-class classifier", expected.num_classes)
  merged = {}
  for key, target in want.items():
    if replace_head and key in head_keys:
      merged[key] = target
    else:
      merged[key] = np.asarray(have[key], dtype=target.dtype)
  out = dict(variables)
  out.update(flax.traverse_util.unflatten_dict(merged))
  return out


# ---------------------------------------------------------------------------
# Files and directories.


def read_pretrained(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads weights from any supported source in our layout.

  Args:
    path: `.safetensors`, `.pth`/`.pt`, or a directory written by
      `convert_file` (also a plain `checkpoint.save_variables` directory).

  Returns:
    (variables, info): numpy variables `{"params", "batch_stats"}` and a dict
    with `torch_names` (bool: whether torch names apply) and, for converted
    directories, their metadata.

  Raises:
    FileNotFoundError, ImportError, ValueError: see
      `torch_layout.read_state_dict` and `torch_layout.convert_state_dict`;
      also for unrecognised (unexpected) tensors.
  """
  if os.path.isdir(path):
    meta_path = os.path.join(path, METADATA_FILE)
    metadata = {}
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        metadata = json.load(f)
    folder = os.path.join(path, VARIABLES_DIR)
    restored = checkpoint.load_variables(
        folder if os.path.isdir(folder) else path)
    variables = {c: jax.tree.map(np.asarray, restored[c])
                 for c in _COLLECTIONS if c in restored}
    if "params" not in variables:
      raise ValueError(
          f"{path} is an Orbax checkpoint without `params`; expected a "
          "directory written by launch/convert_weights.py.")
    return variables, {"torch_names": False, "metadata": metadata}
  variables, unrecognised = torch_layout.convert_state_dict(
      torch_layout.read_state_dict(path))
  if unrecognised:
    raise ValueError(
        f"{path} has {len(unrecognised)} tensors that are not part of a "
        f"torchvision ResNet ({describe(variables).summary()}): "
        f"{', '.join(unrecognised[:_MAX_LISTED])}"
        f"{' ...' if len(unrecognised) > _MAX_LISTED else ''}.")
  return variables, {"torch_names": True, "metadata": {}}


def load_into(path: str, variables):
  """Loads pretrained weights into a model's freshly initialised variables.

  This is what `config.model.init=PATH` does (see `train.init_variables`).

  Args:
    path: `.safetensors`, `.pth`/`.pt` (needs torch), or a directory written
      by `launch/convert_weights.py`.
    variables: the model's fresh variables (`model.init(...)`), which define
      the expected architecture, names, shapes and dtypes.

  Returns:
    The variables with every backbone tensor (and the running BN statistics)
    from the file. If the file's classifier has another number of classes,
    the fresh head of `variables` is kept (head replacement, logged).

  Raises:
    ValueError: the file holds another architecture, depth or width (the
      message names both), or has missing/unexpected tensors or wrong shapes.
  """
  pretrained, info = read_pretrained(path)
  merged = merge_into(pretrained, variables, source=path,
                      torch_names=info["torch_names"])
  arch = describe(pretrained)
  logging.info("Initialised %s from %s (%d tensors).", arch.summary(), path,
               len(_flat(pretrained)))
  return jax.tree.map(jnp.asarray, merged)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def convert_file(input_path: str, output_dir: str,
                 model_name: str) -> Dict[str, Any]:
  """Converts a torchvision weights file once into an Orbax directory.

  The directory holds `variables/` (Orbax, `{"params", "batch_stats"}`) and
  `metadata.json`; `load_into(output_dir, ...)` reads it without torch.

  Args:
    input_path: `.safetensors` or `.pth`/`.pt` torchvision-layout weights.
    output_dir: where to write (created; existing contents are replaced).
    model_name: the registry name the weights must fit, e.g. `resnet50`;
      the width and number of classes are taken from the file.

  Returns:
    The metadata written to `metadata.json`.

  Raises:
    ValueError: the weights do not fit `model_name` (or are not a ResNet).
  """
  pretrained, _ = read_pretrained(input_path)
  arch = describe(pretrained)
  model = registry.get_model(model_name, num_classes=arch.num_classes or 1000,
                             width=arch.width or 64)
  image = jnp.zeros((1, 64, 64, arch.in_channels or 3), jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), image)
  merged = merge_into(pretrained, abstract, source=input_path)
  if arch.num_classes is None:  # Backbone-only file: save no head either.
    merged["params"].pop(torch_layout.HEAD)
  merged = jax.tree.map(np.ascontiguousarray, merged)
  checkpoint.save_variables(os.path.join(output_dir, VARIABLES_DIR), merged)
  metadata = {
      "format": FORMAT, "version": 1, "model": model_name,
      "architecture": arch._asdict(), "source": os.path.abspath(input_path),
      "source_sha256": _sha256(input_path),
      "num_parameters": int(sum(v.size for v in
                                jax.tree.leaves(merged["params"]))),
  }
  io.write_json(os.path.join(output_dir, METADATA_FILE), metadata)
  logging.info("Converted %s (%s) to %s.", input_path, arch.summary(),
               output_dir)
  return metadata
