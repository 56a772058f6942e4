"""Tests for robustjax.compress.size: hand-computed sizes of a small model.

  python -m pytest tests/compress/size_test.py
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from robustjax.compress import size


def _kernel(nonzero_positions):
  """A (3, 3, 2, 4) kernel (72 weights) with the given non-zeros."""
  k = np.zeros(72, np.float32)
  k[list(nonzero_positions)] = np.arange(1, len(nonzero_positions) + 1)
  return k.reshape(3, 3, 2, 4)


def _variables(kernel):
  return {
      "params": {"conv": {"kernel": kernel},
                 "bn": {"scale": np.ones(4, np.float32),
                        "bias": np.zeros(4, np.float32)},
                 "head": {"kernel": np.ones((4, 10), np.float32),
                          "bias": np.zeros(10, np.float32)}},
      "batch_stats": {"bn": {"mean": np.zeros(4, np.float32),
                             "var": np.ones(4, np.float32)}},
  }

# Float original: 72 + 4 + 4 + 40 + 10 + 4 + 4 = 138 numbers at 32 bits.
ORIGINAL = 138 * 32  # 4416
OTHERS = (138 - 72) * 32  # Everything but the conv kernel: 2112.


class SizeTest(parameterized.TestCase):

  def test_dense_float(self):
    v = _variables(np.ones((3, 3, 2, 4), np.float32))
    r = size.model_size(v)
    self.assertEqual(r["total_bits"], ORIGINAL)
    self.assertEqual(r["total_bytes"], ORIGINAL / 8)
    self.assertEqual(r["reference_bits"], ORIGINAL)
    self.assertEqual(r["compression_ratio"], 1.0)
    self.assertEqual(r["weights"], 72 + 40)
    self.assertEqual(r["tensors"]["params/conv/kernel"]["format"], "dense")

  @parameterized.parameters(
      # 18 non-zeros of 72: bitmap 18*32 + 72 = 648 bits.
      ("bitmap", 18, 18 * 32 + 72),
      # CSR: fan-in 18 -> 5-bit column indices, 4 rows + 1 pointers.
      ("csr", 18, 18 * (32 + 5) + 5 * 32),
      # 60 non-zeros: bitmap 60*32 + 72 = 1992 < 2304 dense.
      ("bitmap", 60, 60 * 32 + 72),
      # 70 non-zeros: bitmap 2312 > dense 2304 -> stored dense.
      ("bitmap", 70, 72 * 32),
  )
  def test_pruned_float(self, fmt, nnz, kernel_bits):
    v = _variables(_kernel(range(nnz)))
    r = size.model_size(v, sparse_format=fmt, reference=_variables(
        np.ones((3, 3, 2, 4), np.float32)))
    self.assertEqual(r["tensors"]["params/conv/kernel"]["bits"], kernel_bits)
    self.assertEqual(r["total_bits"], OTHERS + kernel_bits)
    self.assertAlmostEqual(r["compression_ratio"],
                           ORIGINAL / (OTHERS + kernel_bits))
    self.assertEqual(r["nonzero_weights"], nnz + 40)

  def test_channel_format(self):
    # Output channels 0 and 2 kept (18 weights each), 1 and 3 all zero.
    positions = [i for i in range(72) if i % 4 in (0, 2)]
    v = _variables(_kernel(positions))
    r = size.model_size(v, sparse_format="channel")
    # 2 kept filters x fan-in 18 x 32 bits + a 4-bit channel map.
    self.assertEqual(r["tensors"]["params/conv/kernel"]["bits"],
                     2 * 18 * 32 + 4)

  @parameterized.parameters((8, 72 * 8), (4, 72 * 4))
  def test_quantized(self, bits, kernel_bits):
    q = np.arange(72).reshape(3, 3, 2, 4) % 7 + 1  # No zeros.
    v = {
        "params": {"bn": {"scale": np.ones(4, np.float32),
                          "bias": np.zeros(4, np.float32)},
                   "head": {"bias": np.zeros(10, np.float32)}},
        "batch_stats": {"bn": {"mean": np.zeros(4, np.float32),
                               "var": np.ones(4, np.float32)}},
        "quant": {"conv": {"kernel": q.astype(np.int8),
                           "kernel_scale": np.ones(4, np.float32),
                           "act_scale": np.float32(1.0)},
                  "head": {"kernel": np.ones((4, 10), np.int8),
                           "kernel_scale": np.ones(10, np.float32),
                           "act_scale": np.float32(1.0)}},
    }
    r = size.model_size(v, weight_bits=bits)
    expected = (kernel_bits + 4 * 32 + 32  # conv values, scales, act scale
                + 40 * bits + 10 * 32 + 32  # head values, scales, act scale
                + (4 + 4 + 10 + 4 + 4) * 32)  # BN, bias, statistics
    self.assertEqual(r["total_bits"], expected)
    # The reference is the float original (quantized kernels at 32 bits).
    self.assertEqual(r["reference_bits"], ORIGINAL)
    self.assertAlmostEqual(r["compression_ratio"], ORIGINAL / expected)

  def test_pruned_and_quantized(self):
    q = _kernel(range(9)).astype(np.int8)  # 9 non-zeros.
    v = {"quant": {"conv": {"kernel": q, "kernel_scale": np.ones(4,
                                                                 np.float32),
                            "act_scale": np.float32(1.0)}}}
    r = size.model_size(v, weight_bits=8)
    self.assertEqual(r["total_bits"], (9 * 8 + 72) + 4 * 32 + 32)

  def test_calibration_and_masks_not_counted(self):
    v = _variables(np.ones((3, 3, 2, 4), np.float32))
    v["calib"] = {"conv": {"act_max": np.float32(3.0)}}
    v["masks"] = {"conv": {"kernel": np.ones((3, 3, 2, 4), bool)}}
    self.assertEqual(size.model_size(v)["total_bits"], ORIGINAL)

  def test_bad_format(self):
    with self.assertRaisesRegex(ValueError, "bitmap, csr, channel"):
      size.model_size(_variables(_kernel([0])), sparse_format="coo")


if __name__ == "__main__":
  absltest.main()
