"""MetricWriter: metrics.jsonl and TensorBoard event files, read back."""

import os

from absl.testing import absltest

from robustjax import io
from robustjax.train import metrics


class MetricWriterTest(absltest.TestCase):

  def test_jsonl_and_tensorboard_round_trip(self):
    workdir = self.create_tempdir().full_path
    writer = metrics.MetricWriter(workdir)
    writer.write(1, "train", loss=2.5, accuracy=0.25)
    writer.write(2, "train", loss=1.5, accuracy=0.5)
    writer.write(2, "eval", accuracy=0.625)
    writer.close()
    writer.close()  # Closing twice is harmless.

    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([(r["step"], r["split"]) for r in rows],
                     [(1, "train"), (2, "train"), (2, "eval")])
    self.assertEqual(rows[0]["loss"], 2.5)

    events = [f for f in os.listdir(os.path.join(workdir, metrics.TB_DIR))
              if f.startswith("events.out.tfevents.")]
    self.assertLen(events, 1)
    scalars = metrics.read_scalars(workdir)
    self.assertEqual(list(scalars), ["tb"])  # One run, named by its folder.
    self.assertEqual(scalars["tb"]["train/loss"], [(1, 2.5), (2, 1.5)])
    self.assertEqual(scalars["tb"]["train/accuracy"], [(1, 0.25), (2, 0.5)])
    self.assertEqual(scalars["tb"]["eval/accuracy"], [(2, 0.625)])

  def test_without_tensorboard(self):
    workdir = self.create_tempdir().full_path
    writer = metrics.MetricWriter(workdir, tensorboard=False)
    writer.write(3, "eval", accuracy=0.5)
    writer.close()
    self.assertFalse(os.path.exists(os.path.join(workdir, metrics.TB_DIR)))
    self.assertEqual(metrics.read_scalars(workdir), {})
    self.assertLen(io.read_jsonl(os.path.join(workdir, "metrics.jsonl")), 1)


if __name__ == "__main__":
  absltest.main()
