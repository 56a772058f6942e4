"""Machine-readable run record: metrics.jsonl + TensorBoard summaries."""

import os
import time

from absl import logging

from robustjax import io
from robustjax import parallel


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files.

  Every line is `{"step": int, "split": "train"|"eval"|..., "time": float,
  <name>: value, ...}`. Only process 0 writes.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._active = parallel.is_main_process()
    self._tb = None
    if self._active and tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        logging.warning("tensorboardX missing: no TensorBoard summaries.")

  def write(self, step: int, split: str, **scalars) -> None:
    if not self._active:
      return
    row = {"step": int(step), "split": split, "time": time.time()}
    row.update({k: float(v) for k, v in scalars.items()})
    io.append_jsonl(self.path, [row])
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
