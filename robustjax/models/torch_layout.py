"""torchvision-layout ResNet state dicts: reading them and their names in ours.

torchvision's ResNets (also timm's) name their tensors as below; `resnet.py`
names the same modules as on the right:

  torchvision                        robustjax
  conv1.weight            [O,I,H,W]  params/conv_init/kernel      [H,W,I,O]
  bn1.weight / .bias                 params/bn_init/scale / bias
  bn1.running_mean / _var            batch_stats/bn_init/mean / var
  layer{i}.{j}.conv{k}, .bn{k}       stage{i}_block{j+1}/conv{k}, bn{k}
  layer{i}.{j}.downsample.0 / .1     stage{i}_block{j+1}/proj_conv / proj_bn
  fc.weight [C,F] / fc.bias          params/head/kernel [F,C] / bias
  *.num_batches_tracked              (ignored)

`read_state_dict` reads `.safetensors` (with `safetensors.numpy`, no torch
needed) or `.pth`/`.pt` (needs torch); `convert_state_dict` renames and
transposes it into our variables; `torch_name` names one of our tensors the
torchvision way (for error messages). Checking converted weights against a
model and loading them is `pretrained.py`'s.
"""

import os
import re
from typing import Any, Dict, Optional, Tuple

import flax
import numpy as np
from safetensors import numpy as st_numpy

Key = Tuple[str, ...]  # ("params", "stage1_block1", "conv1", "kernel").

# The classifier's module name in `resnet.ResNet` (torchvision's `fc`).
HEAD = "head"
# Leaf names per module kind: torch name -> (collection, our name).
_LEAVES = {
    "conv": {"weight": ("params", "kernel")},
    "bn": {"weight": ("params", "scale"), "bias": ("params", "bias"),
           "running_mean": ("batch_stats", "mean"),
           "running_var": ("batch_stats", "var")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
}
_IGNORED_LEAVES = ("num_batches_tracked",)
_PREFIXES = ("module.", "model.")  # DataParallel / wrapper prefixes.


# ---------------------------------------------------------------------------
# Name mapping.


def _module_to_ours(module: str) -> Optional[Tuple[Tuple[str, ...], str]]:
  """torch module name -> (our module path, kind), or None if unknown."""
  fixed = {"conv1": (("conv_init",), "conv"), "bn1": (("bn_init",), "bn"),
           "fc": ((HEAD,), "linear")}
  if module in fixed:
    return fixed[module]
  m = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.[01])",
                   module)
  if not m:
    return None
  block = f"stage{int(m[1])}_block{int(m[2]) + 1}"
  name = {"downsample.0": "proj_conv", "downsample.1": "proj_bn"}.get(m[3],
                                                                      m[3])
  return (block, name), "conv" if "conv" in name else "bn"


def _module_to_torch(path: Tuple[str, ...]) -> Tuple[Optional[str], str]:
  """Our module path -> (torch module name or None, kind)."""
  fixed = {("conv_init",): ("conv1", "conv"), ("bn_init",): ("bn1", "bn"),
           (HEAD,): ("fc", "linear")}
  if path in fixed:
    return fixed[path]
  kind = "conv" if path and "conv" in path[-1] else "bn"
  m = len(path) == 2 and re.fullmatch(r"stage(\d+)_block(\d+)", path[0])
  if not m:
    return None, kind
  name = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(path[1],
                                                                      path[1])
  return f"layer{int(m[1])}.{int(m[2]) - 1}.{name}", kind


def torch_name(key: Key) -> str:
  """The torchvision name of our flat key, e.g. `layer1.0.bn1.running_var`."""
  module, kind = _module_to_torch(tuple(key[1:-1]))
  for torch_leaf, (collection, leaf) in _LEAVES[kind].items():
    if module and (collection, leaf) == (key[0], key[-1]):
      return f"{module}.{torch_leaf}"
  return "/".join(key)


# ---------------------------------------------------------------------------
# Reading files.


def _strip_prefixes(state_dict: Dict[str, Any]) -> Dict[str, Any]:
  for prefix in _PREFIXES:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
      state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
  return state_dict


def _read_torch(path: str) -> Dict[str, np.ndarray]:
  """Reads a `.pth`/`.pt` state dict (or a checkpoint dict holding one)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        f"Reading {path} needs PyTorch, which is not installed. Either "
        "`pip install torch==2.13.0` (CPU build is enough), or convert the "
        "file to .safetensors once where torch is available: "
        "`safetensors.torch.save_file(torch.load(path), 'model.safetensors')`."
    ) from None
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict "
                     "(save `model.state_dict()`, not the model).")
  out = {}
  for k, v in obj.items():
    if isinstance(v, torch.Tensor):
      v = v.detach().cpu()
      out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
  return out


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a torch-layout state dict as numpy arrays.

  Args:
    path: a `.safetensors` file (read without torch) or a `.pth`/`.pt` file
      (needs torch). `module.` prefixes (DataParallel) are stripped.

  Returns:
    {torch name: array}, unchanged layout (OIHW convolutions).

  Raises:
    FileNotFoundError: no such file.
    ImportError: a `.pth` file without torch installed.
    ValueError: an unsupported extension.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No pretrained weights file at {path}.")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    state_dict = st_numpy.load_file(path)
  elif ext in (".pth", ".pt", ".bin"):
    state_dict = _read_torch(path)
  else:
    raise ValueError(
        f"Unsupported weights file {path}: expected .safetensors, .pth/.pt, "
        "or a directory written by launch/convert_weights.py.")
  return _strip_prefixes(state_dict)


# ---------------------------------------------------------------------------
# Conversion.


def convert_state_dict(
    state_dict: Dict[str, np.ndarray]) -> Tuple[Dict[str, Any], list]:
  """Converts a torchvision-layout ResNet state dict to robustjax variables.

  Args:
    state_dict: {torch name: array}, e.g. from `read_state_dict`.

  Returns:
    (variables, unrecognised): variables `{"params": ..., "batch_stats": ...}`
    as nested dicts of numpy arrays (views where possible) in our layout, and
    the torch names that do not belong to a torchvision ResNet.

  Raises:
    ValueError: nothing in `state_dict` looks like a torchvision ResNet.
  """
  flat, unrecognised = {}, []
  for name, value in state_dict.items():
    module, _, leaf = name.rpartition(".")
    if leaf in _IGNORED_LEAVES:
      continue
    mapped = _module_to_ours(module)
    if mapped is None or leaf not in _LEAVES[mapped[1]]:
      unrecognised.append(name)
      continue
    path, kind = mapped
    collection, our_leaf = _LEAVES[kind][leaf]
    value = np.asarray(value)
    if kind == "conv" and value.ndim == 4:
      value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO.
    elif kind == "linear" and leaf == "weight" and value.ndim == 2:
      value = value.T
    flat[(collection, *path, our_leaf)] = value
  if not flat:
    raise ValueError(
        "This is not a torchvision-layout ResNet state dict: none of its "
        f"{len(state_dict)} names (e.g. {sorted(state_dict)[:4]}) is a "
        "ResNet name such as conv1.weight, layer1.0.conv1.weight or fc.weight."
    )
  return flax.traverse_util.unflatten_dict(flat), sorted(unrecognised)
