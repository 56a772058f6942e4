r"""Converts torchvision ResNet weights once into a robustjax Orbax directory.

  python launch/convert_weights.py --input=resnet50.safetensors \
      --model=resnet50 --output=/tmp/resnet50_imagenet

The output holds `variables/` (Orbax: params + batch_stats) and
`metadata.json`; train from it with `config.model.init=/tmp/resnet50_imagenet`
(no torch needed then). `.pth`/`.pt` inputs need torch. See docs/pretrained.md.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.models import pretrained

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None,
                    "torchvision-layout weights: .safetensors or .pth/.pt.")
flags.DEFINE_string("model", None,
                    "Registry name the weights must fit: resnet18/34/50/101/"
                    "152 (width and classes are read from the file).")
flags.DEFINE_string("output", None, "Directory to write (replaced if it "
                    "exists).")
flags.mark_flags_as_required(["input", "model", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  launch_common.setup()
  metadata = pretrained.convert_file(FLAGS.input, FLAGS.output, FLAGS.model)
  logging.info("Done: %s (%d parameters) in %s; use "
               "config.model.init=%s", metadata["model"],
               metadata["num_parameters"], FLAGS.output,
               os.path.abspath(FLAGS.output))


def run():
  """Console-script entry point (`robustjax-convert-weights`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
