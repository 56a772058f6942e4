"""What the one-process A/B probes share (attack_stages.py, train_option.py,
input_grad.py): the process set-up, the random CIFAR/digits-style model
and batch, and the alternating timing of two runs.
"""

import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def configure_process():
  """Puts the repository on `sys.path` and sets the process up as the
  launchers do (`cpu_setup.configure_host_devices()`); call before JAX
  starts."""
  sys.path.insert(0, REPO)
  from robustjax import cpu_setup  # pylint: disable=g-import-not-at-top
  cpu_setup.configure_host_devices()


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


def time_alternately(runs, rounds: int):
  """First call, then alternating timed calls, of the A/B scripts' runs.

  `runs` maps a name to a zero-argument function. Each is called once
  (its output as numpy, its compile seconds from `robustjax.timing`), then
  `rounds` times, every other round in reverse order, blocking on the
  result. Returns (outputs, compile seconds, seconds per round) by name.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from robustjax import timing  # pylint: disable=g-import-not-at-top
  timing.compile_seconds()  # Installs the listener.
  outputs, compile_s = {}, {}
  for name, run in runs.items():
    before = timing.compile_seconds()
    outputs[name] = np.asarray(run())
    compile_s[name] = timing.compile_seconds() - before
  seconds = {name: [] for name in runs}
  for r in range(rounds):
    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
      start = time.perf_counter()
      jax.block_until_ready(runs[name]())
      seconds[name].append(time.perf_counter() - start)
  return outputs, compile_s, seconds


def print_runs(compile_s, seconds, width: int):
  """One line per run: compile seconds, median and every round's s/attack."""
  for name in seconds:
    print(f"{name:{width}s} compile {compile_s[name]:5.2f}s  s/attack "
          f"{np.median(seconds[name]):6.3f}  "
          f"{[round(s, 3) for s in seconds[name]]}")
