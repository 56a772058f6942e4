"""Model size in bits actually needed by each representation.

Every array a model needs at inference is counted (params, BatchNorm
statistics, quantization scales; not optimizer state, masks or calibration
statistics):

* **Dense tensors**: `size x bits`, where bits is the stored precision
  (float32 = 32; BatchNorm parameters and statistics, biases and
  quantization scales are float32 and counted at 32 bits).
* **Quantized weights** (`quant/.../kernel`, see quantization.py): `bits` per
  weight as quantized (`weight_bits`), even though they sit in an int8
  container — int4 is counted packed, two per byte — plus one float32 scale
  per output channel and one float32 activation scale per layer.
* **Sparse weights** (conv/dense kernels with zeros): the kernel is viewed as
  a matrix with one row per output channel (`out = shape[-1]` rows of
  `fan_in = size / out` columns) and stored in the sparse format given by
  `sparse_format`, or dense when that is smaller:
    - `"bitmap"` (default): the non-zeros at their value bits plus a 1-bit
      occupancy map of every position: `nnz * b + size`.
    - `"csr"`: compressed sparse rows: each non-zero carries its column index
      in `ceil(log2(fan_in))` bits, plus one 32-bit row pointer per row and
      one more: `nnz * (b + ceil(log2(fan_in))) + (out + 1) * 32`.
    - `"channel"` (structured pruning): only whole zero output channels are
      dropped; kept channels are dense, plus a 1-bit map of the channels:
      `kept * fan_in * b + out`. (The layer that follows is not shrunk and
      the BatchNorm of a dropped channel is still counted — conservative.)

The compression ratio is the original model's size (float32, dense, counted
the same way) divided by the compressed one's.
"""

import math
from typing import Any, Dict, Optional

import flax
import numpy as np

SPARSE_FORMATS = ("bitmap", "csr", "channel")
# Collections that are not needed to serve a model.
_NOT_SERVED = ("calib", "masks", "opt_state", "intermediates")


def _dtype_bits(x) -> int:
  return int(np.dtype(np.asarray(x).dtype).itemsize * 8)


def sparse_bits(shape, nnz: int, value_bits: int, fmt: str,
                kept_channels: Optional[int] = None) -> int:
  """Bits of a kernel of `shape` with `nnz` non-zeros in format `fmt`."""
  if fmt not in SPARSE_FORMATS:
    raise ValueError(f"Unknown sparse format {fmt!r}; use one of "
                     f"{', '.join(SPARSE_FORMATS)}.")
  size = int(np.prod(shape))
  out = int(shape[-1])
  fan_in = size // max(out, 1)
  if fmt == "bitmap":
    return nnz * value_bits + size
  if fmt == "csr":
    index_bits = max(1, math.ceil(math.log2(max(fan_in, 2))))
    return nnz * (value_bits + index_bits) + (out + 1) * 32
  kept = out if kept_channels is None else kept_channels
  return kept * fan_in * value_bits + out


def tensor_size(x, value_bits: Optional[int] = None,
                sparse_format: str = "bitmap",
                may_be_sparse: bool = True) -> Dict[str, Any]:
  """Storage of one array: {"bits", "format", "size", "nonzeros", ...}."""
  x = np.asarray(x)
  b = value_bits or _dtype_bits(x)
  size = int(x.size)
  nnz = int(np.count_nonzero(x))
  entry = dict(shape=list(x.shape), size=size, nonzeros=nnz, value_bits=b,
               format="dense", bits=size * b)
  if may_be_sparse and x.ndim >= 2 and nnz < size:
    per = x.reshape(-1, x.shape[-1])
    kept = int(np.sum(np.any(per != 0, axis=0)))
    sparse = sparse_bits(x.shape, nnz, b, sparse_format, kept)
    if sparse < entry["bits"]:
      entry.update(format=sparse_format, bits=sparse)
  return entry


def model_size(variables, *, weight_bits: Optional[int] = None,
               sparse_format: str = "bitmap",
               reference: Any = None) -> Dict[str, Any]:
  """Bits needed to store a (compressed) model for inference.

  Args:
    variables: the model's variables (float, pruned, or serving variables of
      a quantized model with a `quant` collection).
    weight_bits: bits of the quantized weights in `quant` (4 for int4 kept
      in int8 containers); default: their container's bits.
    sparse_format: "bitmap", "csr" or "channel" (see module doc).
    reference: variables of the original model; default `variables`. Its
      dense float size is the numerator of the compression ratio.

  Returns:
    {"total_bits", "total_bytes", "reference_bits", "compression_ratio",
    "weights" (conv/dense kernel entries), "nonzero_weights",
    "sparse_format", "tensors": {path: entry}}.
  """
  if sparse_format not in SPARSE_FORMATS:
    raise ValueError(f"Unknown sparse format {sparse_format!r}; use one of "
                     f"{', '.join(SPARSE_FORMATS)}.")
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(dict(variables)))
  tensors, total, weights, nonzero = {}, 0, 0, 0
  for path, x in sorted(flat.items()):
    if path[0] in _NOT_SERVED:
      continue
    is_kernel = path[-1] == "kernel" and np.ndim(x) >= 2
    bits = weight_bits if (path[0] == "quant" and is_kernel) else None
    entry = tensor_size(x, bits, sparse_format, may_be_sparse=is_kernel)
    tensors["/".join(path)] = entry
    total += entry["bits"]
    if is_kernel:
      weights += entry["size"]
      nonzero += entry["nonzeros"]
  if reference is None:
    ref_bits = dense_bits(variables)
  else:
    ref_bits = dense_bits(reference)
  return dict(total_bits=int(total), total_bytes=total / 8,
              reference_bits=int(ref_bits),
              compression_ratio=ref_bits / max(total, 1),
              weights=int(weights), nonzero_weights=int(nonzero),
              weight_sparsity=1 - nonzero / max(weights, 1),
              sparse_format=sparse_format, weight_bits=weight_bits,
              tensors=tensors)


def dense_bits(variables) -> int:
  """Dense size of every served array at its stored precision (quantized
  kernels counted as float32, i.e. the size of the float original)."""
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(dict(variables)))
  total = 0
  for path, x in flat.items():
    if path[0] in _NOT_SERVED:
      continue
    if path[0] == "quant":
      if path[-1] != "kernel":
        continue  # Scales do not exist in the float original.
      total += int(np.size(x)) * 32
    else:
      total += int(np.size(x)) * _dtype_bits(x)
  return total


def summary(report: Dict[str, Any]) -> str:
  """One line: '123.4 KiB (1,010,800 bits), 7.9x smaller, 90.0% zeros'."""
  return (f"{report['total_bytes'] / 1024:.1f} KiB "
          f"({report['total_bits']:,} bits), "
          f"{report['compression_ratio']:.2f}x smaller than "
          f"{report['reference_bits'] / 8 / 1024:.1f} KiB, "
          f"{100 * report['weight_sparsity']:.1f}% zero weights")
