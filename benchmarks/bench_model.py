"""The random CIFAR/digits-style model and batch the one-process A/B
benchmarks share (attack_stages_benchmark.py, train_option_benchmark.py,
input_grad_benchmark.py).

Import it after `sys.path` holds the repository (the scripts do that).
"""

import numpy as np


def add_flags(parser, *, arch, size, channels):
  """--arch, --width, --size, --channels with the script's defaults."""
  parser.add_argument("--arch", default=arch)
  parser.add_argument("--width", type=int, default=16)
  parser.add_argument("--size", type=int, default=size)
  parser.add_argument("--channels", type=int, default=channels)


def add_attack_flags(parser):
  """--examples, --eps, --steps, --rounds of the attack A/B scripts."""
  parser.add_argument("--examples", type=int, default=200)
  parser.add_argument("--eps", default="0.02,0.05")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=8)


def model_and_batch(args, n: int):
  """The model of `args` (normalisation 0.5 / 0.25 per channel) and n
  random uint8 images with random labels (seed 0)."""
  from robustjax import models  # pylint: disable=g-import-not-at-top
  ch = args.channels
  model = models.get_model(args.arch, num_classes=10, width=args.width,
                           mean=(0.5,) * ch, std=(0.25,) * ch)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, args.size, args.size, ch), np.uint8)
  labels = rng.integers(0, 10, (n,), np.int32)
  return model, images, labels
