"""Machine-readable run record: metrics.jsonl + TensorBoard summaries.

Scalars go to `WORKDIR/metrics.jsonl` (one JSON object a line) and, as
TensorBoard event files, to `WORKDIR/tb/` (written with tensorboardX, no
TensorFlow needed). View them with `tensorboard --logdir WORKDIR` (a study's
workdir shows every model's training run and the study's curves), or read
them back in Python with `read_scalars`.

In a bucket workdir (`gs://...`) only metrics.jsonl is written (each write
re-uploads it whole, robustjax.io.append_jsonl): TensorBoard event files are
appended to as training runs, which object stores cannot do, so they are
skipped with one log line. Use a local or mounted workdir for TensorBoard.
"""

import collections
import os
import time
from typing import Dict, List, Tuple

from absl import logging
from tensorboard.backend.event_processing import event_multiplexer
import tensorboardX

from robustjax import io
from robustjax import parallel

TB_DIR = "tb"


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files.

  Every line is `{"step": int, "split": "train"|"eval"|..., "time": float,
  <name>: value, ...}`; the same scalars go to TensorBoard under the tag
  `<split>/<name>`. Only process 0 writes.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    """Opens the writers.

    Args:
      workdir: the run's folder; TensorBoard files go to `workdir/tb/`
        (local workdirs only: none in a bucket).
      tensorboard: False writes metrics.jsonl only.
    """
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._active = parallel.is_main_process()
    self._tb = None
    if self._active and tensorboard and not io.is_local(workdir):
      logging.log_first_n(
          logging.INFO, "No TensorBoard event files in bucket workdirs such "
          "as %s (object stores cannot append); metrics.jsonl has the same "
          "scalars.", 1, workdir)
    elif self._active and tensorboard:
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TB_DIR))

  def write(self, step: int, split: str, **scalars) -> None:
    """Records `scalars` at `step` for `split` (e.g. "train", "eval")."""
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
    """Flushes and closes the TensorBoard writer."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_scalars(logdir: str) -> Dict[str, Dict[str, List[Tuple[int, float]]]]:
  """Reads back the TensorBoard scalars under `logdir`, as TensorBoard does.

  Args:
    logdir: a folder searched recursively for event files (e.g. a workdir).

  Returns:
    `{run: {tag: [(step, value), ...]}}`, runs named by their folder relative
    to `logdir` ("." for `logdir` itself), points in step order.
  """
  mux = event_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(logdir)
  mux.Reload()
  out = collections.defaultdict(dict)
  for run, tags in mux.Runs().items():
    for tag in tags.get("scalars", []):
      events = sorted(mux.Scalars(run, tag), key=lambda e: e.step)
      out[run][tag] = [(int(e.step), float(e.value)) for e in events]
  if not out:
    logging.warning("No TensorBoard scalars under %s.", logdir)
  return dict(out)
