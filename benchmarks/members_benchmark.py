"""K seeds of one model: one vmapped program (`train_members`) vs K runs.

  python benchmarks/members_benchmark.py --rounds=2 --output=members.json

Trains the default study's original (configs/default.py: digits, 4 epochs,
batch 64) for K seeds twice in fresh folders, interleaved: once as K
sequential `train_and_evaluate` runs (what the study does) and once as one
`train_members` run (the K models stacked and vmapped). The process is set
up as the launchers train (`cpu_setup.configure_host_devices(1)`: one
device; the launchers train on one of one device per core, which runs a
step as fast), and no persistent compilation cache is used, so both include
their compiles. Prints (and with `--output` writes) the JSON of wall
seconds per round and the per-round ratio; members_results.md records runs.
Rounds alternate which goes first; the first round includes the compiles
(and the eager-op programs whoever runs first compiles for both), later
rounds reuse the in-process programs (steady state).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import harness  # benchmarks/, the script's own folder.

sys.path.insert(0, harness.REPO)

# pylint: disable=g-import-not-at-top
from robustjax import cpu_setup

DEVICES = cpu_setup.configure_host_devices(1)  # One device, as training.

import jax

from configs import default
from robustjax.compress import recipes
from robustjax.train import trainer


def _configs(k: int, arch: str, smoke: bool = False):
  config = recipes.with_arch(default.get_config("runlocal" if smoke else None),
                             arch)
  return [recipes.derived_config(config, seed=s) for s in range(k)]


def sequential(k: int, arch: str, root: str, smoke: bool) -> float:
  t = time.perf_counter()
  for i, cfg in enumerate(_configs(k, arch, smoke)):
    trainer.train_and_evaluate(cfg, os.path.join(root, f"seq{i}"))
  return time.perf_counter() - t


def vmapped(k: int, arch: str, root: str, smoke: bool) -> float:
  t = time.perf_counter()
  members = [trainer.Member(cfg, os.path.join(root, f"member{i}"))
             for i, cfg in enumerate(_configs(k, arch, smoke))]
  trainer.train_members(members, os.path.join(root, "group"))
  return time.perf_counter() - t


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--k", type=int, default=3)
  parser.add_argument("--arch", default="resnet8:16")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--output", default="", help="also write JSON here.")
  parser.add_argument("--smoke", action="store_true",
                      help="K = 2 of the `runlocal` config, one round: checks "
                      "that the benchmark runs (tests).")
  args = parser.parse_args()
  if args.smoke:
    args.k, args.rounds = 2, 1
  results = {"sequential": [], "vmapped": []}
  for r in range(args.rounds):
    order = (("sequential", sequential), ("vmapped", vmapped))
    for name, fn in order[::(-1) ** r]:  # Alternate who goes first.
      root = tempfile.mkdtemp()
      try:
        results[name].append(fn(args.k, args.arch, root, args.smoke))
      finally:
        shutil.rmtree(root, ignore_errors=True)
      print(f"round {r}: {name} {results[name][-1]:.1f} s", flush=True)
  best = {n: min(v) for n, v in results.items()}
  report = {
      "k": args.k, "arch": args.arch, "devices": jax.device_count(),
      "machine": harness.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
      "load_avg_end": os.getloadavg(), "seconds": results, "best": best,
      "vmapped_speedup": best["sequential"] / best["vmapped"]}
  print(json.dumps(report, indent=1))
  print(harness.interval_line("sequential / vmapped time",
                              round_ratios(report)))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=1)


def round_ratios(report):
  """Per round, the sequential runs' time / the vmapped run's."""
  return [s / v for s, v in zip(report["seconds"]["sequential"],
                                report["seconds"]["vmapped"])]


if __name__ == "__main__":
  main()
