"""TensorBoard curves of a study: accuracy vs level, one run per model.

`write_study_summaries(rows, workdir)` (re)writes `WORKDIR/tb/study/<model>/`
from the result rows, so `tensorboard --logdir WORKDIR` shows, next to every
model's training curves (`models/<model>/train/tb`):

* `corruption/<name>` and `corruption/mean`: accuracy (%) at step = severity;
* `adversarial/<attack>`: accuracy (%) at step = index of eps in the grid
  (TensorBoard steps are integers; the text tab `levels/adversarial` maps
  each step to its eps);
* `clean/accuracy`, `domain/<target>`: one point at step 0;
* `robustness/R_<shift>`: relative robustness R at step 0.

Run names are the model ids with "/" as "__", so TensorBoard's run filter
(a regex, e.g. `prune` or `resnet8`) picks one family of models.

Bucket workdirs (`gs://...`) get no event files (tensorboardX cannot write
them through the object-store path layer): `write_study_summaries` then logs
one line and writes nothing; the report and results.csv hold the same data.
"""

import collections
import os
import shutil
from typing import Dict, List, Sequence

from absl import logging
import numpy as np
import tensorboardX

from robustjax import io
from robustjax.study.claims import data as claims_data

STUDY_TB_DIR = os.path.join("tb", "study")


def run_name(model_id: str) -> str:
  """A model id as a single folder name ("resnet8-w16/prune-..." style)."""
  return model_id.replace("/", "__").replace(":", "-")


def level_steps(rows: Sequence[dict], shift: str) -> Dict[float, int]:
  """Level -> integer TensorBoard step for one shift type.

  Corruption severities are already integers and are their own step; other
  levels (eps) are numbered in increasing order.
  """
  levels = sorted({r["level"] for r in rows
                   if r["shift"] == shift and r["level"] is not None})
  if shift == "corruption" and all(float(lv).is_integer() for lv in levels):
    return {lv: int(lv) for lv in levels}
  return {lv: i for i, lv in enumerate(levels)}


def _curves(rows: Sequence[dict], steps: Dict[str, Dict[float, int]]
            ) -> Dict[str, Dict[str, Dict[int, List[float]]]]:
  """model_id -> tag -> step -> accuracies (several when seeds repeat)."""
  out = collections.defaultdict(
      lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
  for r in rows:
    acc, shift = 100.0 * r["accuracy"], r["shift"]
    tags = out[r["model_id"]]
    if shift == "clean":
      tags["clean/accuracy"][0].append(acc)
    elif shift == "domain":
      tags[f"domain/{r['name']}"][0].append(acc)
    elif r["level"] is not None and shift in steps:
      step = steps[shift][r["level"]]
      tags[f"{shift}/{r['name']}"][step].append(acc)
      if shift == "corruption":
        tags["corruption/mean"][step].append(acc)
  return out


def write_study_summaries(rows: Sequence[dict], workdir: str) -> str:
  """(Re)writes the study's TensorBoard runs from result rows.

  The folder is derived data: it is replaced on every call, so calling this
  after each model (or at the end) leaves exactly one point per tag/step.

  Args:
    rows: result rows (robustjax.study.runner schema).
    workdir: the study's workdir.

  Returns:
    The folder written, `workdir/tb/study` ("" for a bucket workdir, where
    nothing is written).
  """
  if not io.is_local(workdir):
    logging.log_first_n(
        logging.INFO, "No study TensorBoard curves in the bucket workdir %s "
        "(event files need a local or mounted folder); see report.md.", 1,
        workdir)
    return ""
  folder = os.path.join(workdir, STUDY_TB_DIR)
  if os.path.isdir(folder):
    shutil.rmtree(folder)
  os.makedirs(folder, exist_ok=True)
  steps = {s: level_steps(rows, s) for s in ("corruption", "adversarial")}
  summaries = claims_data.summarize_models(rows)
  for model_id, tags in sorted(_curves(rows, steps).items()):
    writer = tensorboardX.SummaryWriter(os.path.join(folder,
                                                     run_name(model_id)))
    try:
      for tag, points in sorted(tags.items()):
        for step, values in sorted(points.items()):
          writer.add_scalar(tag, float(np.mean(values)), step)
      for shift, r in summaries[model_id].robustness.items():
        if np.isfinite(r):
          writer.add_scalar(f"robustness/R_{shift}", float(r), 0)
      if steps["adversarial"]:
        writer.add_text("levels/adversarial", ", ".join(
            f"step {i}: eps {lv:g}" for lv, i in steps["adversarial"].items()),
                        0)
    finally:
      writer.close()
  return folder
