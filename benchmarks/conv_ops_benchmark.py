"""Convolutions one by one: XLA:CPU (the launchers' set-up) vs PyTorch.

  PYTHONPATH=. python benchmarks/conv_ops_benchmark.py \
      --torch_python=/path/to/torch-venv/bin/python   # results: train_results.md

Training a ResNet-20 on CPU runs below PyTorch's speed (train_results.md);
this asks how much of the gap is the convolutions themselves. For every
distinct convolution of a CIFAR-style ResNet-20 (width 16) at one input
shape and batch, three programs are timed on their own:

* `fwd`: the convolution;
* `dx`: its input gradient (given the output gradient);
* `dw`: its kernel gradient (given the input and the output gradient);
* `bwd`: both gradients in one call (what a training step needs; PyTorch's
  autograd makes this one call).

Ours: `jax.lax.conv_general_dilated` (NHWC / HWIO, what flax's `nn.Conv`
calls) and its `jax.vjp`, each jitted on its own, in a process set up as
the launchers set it up (`cpu_setup.configure_host_devices()`: XLA flags,
one device per core; the program runs on the first device, as training
does). PyTorch: `F.conv2d` and `aten.convolution_backward` with one
output selected (what autograd runs; `torch.nn.grad.conv2d_input` passes
an expanded dummy input that takes a slower path), NCHW, its default
threads. Padding
is torch's (1 for 3x3, 0 for 1x1) on both sides, so the FLOPs are equal.

Workers answer one timed request at a time (train_benchmark.py's
protocol) and requests alternate between the two, so both see the same
load. The report gives ms per call (median over rounds), the ratio, and
the network's total per training step: each op times the number of
convolutions of that shape in the network; "fwd + bwd" is what a step
runs (the stem needs no input gradient: its `dw` stands in for `bwd`).
Isolated calls are not a whole step (layouts and reorders are paid per
call; a step's program can fuse and choose differently): compare the
totals with train_benchmark.py's step times of the same hour.
"""

import argparse
import json
import os
import statistics
import sys
import time

import train_benchmark as tb  # pylint: disable=g-bad-import-order

# name: (spatial size of the input, in channels, out channels, kernel,
# stride, how many in a ResNet-20), for a 32x32 input; scaled with --size.
LAYERS = (
    ("stem 3x3 3->16", 32, 3, 16, 3, 1, 1),
    ("3x3 16->16", 32, 16, 16, 3, 1, 6),
    ("3x3/2 16->32", 32, 16, 32, 3, 2, 1),
    ("1x1/2 16->32", 32, 16, 32, 1, 2, 1),
    ("3x3 32->32", 16, 32, 32, 3, 1, 5),
    ("3x3/2 32->64", 16, 32, 64, 3, 2, 1),
    ("1x1/2 32->64", 16, 32, 64, 1, 2, 1),
    ("3x3 64->64", 8, 64, 64, 3, 1, 5),
)
OPS = ("fwd", "dx", "dw", "bwd")


def _layers(size, channels):
  scale = size / 32
  out = []
  for name, s, cin, cout, k, stride, count in LAYERS:
    if name.startswith("stem"):
      cin = channels
      name = f"stem 3x3 {channels}->16"
    out.append((name, round(s * scale), cin, cout, k, stride, count))
  return out


def _flops(batch, layer):
  _, s, cin, cout, k, stride, _ = layer
  out = s // stride
  return 2 * batch * out * out * cin * cout * k * k


def _ours_worker(args):
  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, tb.REPO)
  from robustjax import cpu_setup
  cpu_setup.configure_host_devices()
  import jax
  import numpy as np
  # pylint: enable=g-import-not-at-top
  device = jax.devices()[0]
  rng = np.random.default_rng(0)
  runners = {}
  for layer in _layers(args.size, args.channels):
    name, s, cin, cout, k, stride, _ = layer
    pad = ((k // 2, k // 2),) * 2

    def conv(x, w, stride=stride, pad=pad):
      return jax.lax.conv_general_dilated(
          x, w, (stride, stride), pad,
          dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x = jax.device_put(rng.standard_normal(
        (args.batch, s, s, cin), np.float32), device)
    w = jax.device_put(rng.standard_normal((k, k, cin, cout), np.float32),
                       device)
    dy = jax.device_put(np.ones(conv(x, w).shape, np.float32), device)
    fns = {
        "fwd": (jax.jit(conv), (x, w)),
        "dx": (jax.jit(lambda x, w, dy, conv=conv: jax.vjp(
            lambda x: conv(x, w), x)[1](dy)[0]), (x, w, dy)),
        "dw": (jax.jit(lambda x, w, dy, conv=conv: jax.vjp(
            lambda w: conv(x, w), w)[1](dy)[0]), (x, w, dy)),
        "bwd": (jax.jit(lambda x, w, dy, conv=conv: jax.vjp(
            conv, x, w)[1](dy)), (x, w, dy)),
    }
    for op, (fn, fn_args) in fns.items():
      jax.block_until_ready(fn(*fn_args))

      def run(reps, fn=fn, fn_args=fn_args):
        for _ in range(reps):
          out = fn(*fn_args)
        jax.block_until_ready(out)
      runners[f"{name}|{op}"] = run
  tb._serve(runners, dict(  # pylint: disable=protected-access
      jax=jax.__version__, devices=jax.device_count(),
      xla_flags=os.environ.get("XLA_FLAGS", "")))


def _torch_worker(args):
  # pylint: disable=g-import-not-at-top
  import torch
  import torch.nn.functional as F
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(0)
  runners = {}
  for layer in _layers(args.size, args.channels):
    name, s, cin, cout, k, stride, _ = layer
    pad = k // 2
    x = torch.randn(args.batch, cin, s, s)
    w = torch.randn(cout, cin, k, k)
    dy = torch.ones_like(F.conv2d(x, w, stride=stride, padding=pad))
    def backward(mask, x=x, w=w, dy=dy, stride=stride, pad=pad):
      # What autograd runs for a convolution's backward (the mkldnn path
      # where it applies); `mask` picks the input or the kernel gradient.
      return torch.ops.aten.convolution_backward(
          dy, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0],
          1, mask)

    fns = {
        "fwd": lambda x=x, w=w, stride=stride, pad=pad: F.conv2d(
            x, w, stride=stride, padding=pad),
        "dx": lambda backward=backward: backward((True, False, False)),
        "dw": lambda backward=backward: backward((False, True, False)),
        "bwd": lambda backward=backward: backward((True, True, False)),
    }
    for op, fn in fns.items():
      fn()

      def run(reps, fn=fn):
        with torch.no_grad():
          for _ in range(reps):
            fn()
      runners[f"{name}|{op}"] = run
  tb._serve(runners, dict(  # pylint: disable=protected-access
      torch=torch.__version__, threads=torch.get_num_threads()))


def _markdown(report):
  """Per-op table and per-step totals; PyTorch columns when it ran."""
  batch, whos = report["batch"], report["workers"]
  names = {"ours": "ours", "torch": "PyTorch"}
  both = len(whos) == 2
  head = (["layer (count)", "op"] + [f"{names[w]} ms" for w in whos] +
          (["ours / PyTorch"] if both else []) +
          [f"{names[w]} GFLOP/s" for w in whos])
  rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  totals = {w: {op: 0.0 for op in OPS} for w in whos}
  for layer in _layers(report["size"], report["channels"]):
    name, count = layer[0], layer[-1]
    flops = _flops(batch, layer)
    stem = name.startswith("stem")
    for op in OPS:
      ms = {w: statistics.median(r["seconds"] / r["reps"] for r in
                                 report["runs"][f"{w}|{name}|{op}"]) * 1e3
            for w in whos}
      for w in whos:
        if not (stem and op in ("dx", "bwd")):
          totals[w][op] += count * ms[w]
        if stem and op == "dw":  # Training needs no input gradient here.
          totals[w]["bwd"] += count * ms[w]
      cells = ([f"{name} ({count})", op] + [f"{ms[w]:.2f}" for w in whos] +
               ([f"{ms['ours'] / ms['torch']:.2f}"] if both else []) +
               [f"{flops / ms[w] / 1e6:.0f}" for w in whos])
      rows.append("| " + " | ".join(cells) + " |")
  head = (["per training step (count x ms; the stem's input gradient left "
           "out)"] + [f"{names[w]} ms" for w in whos] +
          (["ours / PyTorch"] if both else []))
  rows += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for op in OPS + ("fwd + bwd",):
    t = {w: (totals[w]["fwd"] + totals[w]["bwd"] if op == "fwd + bwd"
             else totals[w][op]) for w in whos}
    cells = ([op] + [f"{t[w]:.1f}" for w in whos] +
             ([f"{t['ours'] / t['torch']:.2f}"] if both else []))
    rows.append("| " + " | ".join(cells) + " |")
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--torch_python", default="",
                      help="python of a venv with torch (never a dependency "
                      "of the library); empty: ours only.")
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--reps", type=int, default=3,
                      help="calls per timed request.")
  parser.add_argument("--output", default="", help="also write JSON here.")
  parser.add_argument("--smoke", action="store_true",
                      help="8x8 inputs, batch 4, one round of one call: "
                      "checks that the benchmark runs (tests).")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.smoke:
    args.size, args.batch, args.rounds, args.reps = 8, 4, 1, 1
  if args.worker == "ours":
    return _ours_worker(args)
  if args.worker == "torch":
    return _torch_worker(args)
  shape = [f"--size={args.size}", f"--channels={args.channels}",
           f"--batch={args.batch}"]
  me = os.path.abspath(__file__)
  load_start = os.getloadavg()
  # pylint: disable=protected-access
  workers = {"ours": tb._Worker([sys.executable, me, "--worker=ours"] + shape,
                                tb._clean_env())}
  if args.torch_python:
    workers["torch"] = tb._Worker(
        [args.torch_python, me, "--worker=torch"] + shape, tb._clean_env())
  # pylint: enable=protected-access
  whats = [f"{layer[0]}|{op}" for layer in _layers(args.size, args.channels)
           for op in OPS]
  runs = {f"{w}|{what}": [] for w in workers for what in whats}
  for r in range(args.rounds):
    order = list(workers) if r % 2 == 0 else list(workers)[::-1]
    for what in whats:
      for w in order:
        runs[f"{w}|{what}"].append(dict(workers[w].time(what, args.reps),
                                        reps=args.reps,
                                        load=os.getloadavg()[0]))
    print(f"round {r + 1}/{args.rounds} done, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
  for worker in workers.values():
    worker.close()
  report = dict(
      machine=dict(cpu=tb._cpu_name(), cores=os.cpu_count()),  # pylint: disable=protected-access
      size=args.size, channels=args.channels, batch=args.batch,
      workers=list(workers),
      load_start=load_start, load_end=os.getloadavg(),
      date=time.strftime("%Y-%m-%d %H:%M"),
      info={w: worker.info for w, worker in workers.items()}, runs=runs)
  print(_markdown(report), flush=True)
  print("machine:", json.dumps(report["machine"]))
  print("info:", json.dumps(report["info"]))
  print("load average at start / end:", report["load_start"], "/",
        report["load_end"])
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
