"""Compile and run time of the default study's programs, per process setup.

  PYTHONPATH=. python benchmarks/compile_benchmark.py --rounds=3
      # results: compile_results.md

Two programs, built as the library builds them, at the default study's
shapes (configs/default.py: ResNet-8 width 16, 16x16x1 images, 10 classes):

* `train`: the trainer's `train_step` (SGD + Nesterov momentum, weight
  decay, cosine schedule, crop augmentation), batch 64, jitted as in the
  trainer (state donated).
* `pgd`: PGD-10 L-inf (`attacks.pgd`, unrolled on CPU) on 200 images,
  vmapped over 2 radii (eps 0.02, 0.05), as the attack evaluator runs it.

For each, a fresh process (no persistent compilation cache) reports the
seconds spent tracing, lowering and compiling (XLA) the program, then the
median of timed calls, and a checksum of the outputs (the variants must give
the same numbers). Variants, each set up before JAX starts:

* `default`: `cpu_setup.configure_host_devices(1)`, the launchers' default
  until 2026-12-01 (since then one device per core, which on a 2-core
  machine is `two_devices`, with training on the first device).
* `o3`: the same with XLA's default optimisation level instead of
  `cpu_setup.CPU_ONLY_XLA_FLAGS` (`--xla_backend_optimization_level=1`).
* `two_devices` (`--variants=...` only): `configure_host_devices(2)`, the
  programs run on the first device, as the trainer does (`train_mesh()`)
  and as a small evaluation batch would if only large ones were sharded.

Rounds alternate the variants, so all see the same machine load.
`--smoke` (tests/benchmarks_test.py): tiny shapes, one round, checks that
the script still runs against the library; it times nothing worth keeping.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = dict(arch="resnet8", width=16, size=16, channels=1, batch=64,
              attack_batch=200, steps=10, reps=20, attack_reps=5)
SMOKE_SHAPES = dict(arch="resnet8", width=4, size=8, channels=1, batch=8,
                    attack_batch=8, steps=2, reps=1, attack_reps=1)
VARIANTS = ("default", "o3", "two_devices")


def _worker(variant: str, shapes) -> dict:
  """Builds and times both programs in this (fresh) process."""
  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from robustjax import cpu_setup
  cpu_setup.configure_host_devices(
      num_devices=2 if variant == "two_devices" else 1)
  if variant == "o3":
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in os.environ["XLA_FLAGS"].split()
        if f not in cpu_setup.CPU_ONLY_XLA_FLAGS)
  import functools
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from robustjax import models
  from robustjax.robustness import attacks
  from robustjax.train import optim
  from robustjax.train import state as state_lib
  from robustjax.train import steps
  # pylint: enable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", False)
  s = shapes
  rng = np.random.default_rng(0)
  model = models.get_model(s["arch"], num_classes=10, width=s["width"],
                           mean=(0.5,) * s["channels"],
                           std=(0.25,) * s["channels"])
  shape = (s["size"], s["size"], s["channels"])
  variables = jax.device_get(model.init(jax.random.key(0),
                                        jnp.zeros((1,) + shape)))
  out = dict(xla_flags=os.environ.get("XLA_FLAGS", ""),
             devices=jax.device_count())

  def measure(name, fn, args, reps):
    t0 = time.perf_counter()
    traced = fn.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    result = jax.block_until_ready(compiled(*args))  # Warm-up.
    times = []
    for _ in range(reps):
      start = time.perf_counter()
      result = jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - start)
    out[name] = dict(trace_s=t1 - t0, lower_s=t2 - t1, compile_s=t3 - t2,
                     run_ms=1000 * statistics.median(times))
    return result

  cfg = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
      weight_decay=5e-4, schedule="cosine", warmup_steps=0,
      grad_clip_norm=0.0))
  tx = optim.make(cfg, 1000)
  state = state_lib.create(variables["params"], variables["batch_stats"], tx,
                           jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx,
      loss_fn=lambda lg, lb, x, a: steps.cross_entropy(lg, lb),
      crop_padding=2, flip=False))
  images = jnp.asarray(rng.integers(0, 256, (s["batch"],) + shape, np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, (s["batch"],), np.int32))
  # Not donated here: each timed call restarts from the same state.
  new_state, _ = measure("train", step, (state, images, labels, None),
                         s["reps"])
  out["train"]["checksum"] = float(sum(
      jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(new_state.params)))

  apply_fn = models.inference_fn(model)
  attack = attacks.pgd("linf", s["steps"])
  x = jnp.asarray(rng.random((s["attack_batch"],) + shape, np.float32))
  y = jnp.asarray(rng.integers(0, 10, (s["attack_batch"],), np.int32))
  pgd = jax.jit(lambda v, x, y, k, e: jax.vmap(
      lambda eps: attack.perturb(apply_fn, v, x, y, k, eps))(e))
  adv = measure("pgd", pgd, (variables, x, y, jax.random.key(1),
                             jnp.asarray([0.02, 0.05])), s["attack_reps"])
  out["pgd"]["checksum"] = float(jnp.sum(adv))
  return out


def _markdown(runs) -> str:
  lines = ["| program | variant | trace s | lower s | XLA compile s | "
           "run ms | checksums |", "|---|---|---|---|---|---|---|"]
  for program in ("train", "pgd"):
    for variant in runs:
      rows = [r[program] for r in runs[variant]]
      med = lambda k, rows=rows: statistics.median(r[k] for r in rows)
      sums = sorted({f"{r['checksum']:.6g}" for r in rows})
      lines.append(
          f"| {program} | {variant} | {med('trace_s'):.2f} | "
          f"{med('lower_s'):.2f} | {med('compile_s'):.2f} | "
          f"{med('run_ms'):.1f} | {', '.join(sums)} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes, one round (tests).")
  parser.add_argument("--variants", default="default,o3",
                      help="comma-separated, of: " + ", ".join(VARIANTS))
  parser.add_argument("--output", default="", help="also write JSON here.")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  shapes = SMOKE_SHAPES if args.smoke else SHAPES
  if args.worker:
    print(json.dumps(_worker(args.worker, shapes)))
    return
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for k in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "JAX_NUM_CPU_DEVICES"):
    env.pop(k, None)
  rounds = 1 if args.smoke else args.rounds
  variants = tuple(v for v in args.variants.split(",") if v)
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    sys.exit(f"Unknown --variants {sorted(unknown)}; use {VARIANTS}.")
  runs = {v: [] for v in variants}
  for r in range(rounds):
    order = variants if r % 2 == 0 else variants[::-1]
    for variant in order:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f"--worker={variant}"]
          + (["--smoke"] if args.smoke else []), env=env, cwd=REPO,
          capture_output=True, text=True, check=False)
      if proc.returncode:
        sys.exit(f"worker {variant} failed:\n{proc.stderr[-3000:]}")
      runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f"round {r + 1}/{rounds} {variant}: "
            f"{json.dumps(runs[variant][-1])}", flush=True)
  print(_markdown(runs), flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(dict(shapes=shapes, runs=runs, load_end=os.getloadavg()), f,
                indent=1)


if __name__ == "__main__":
  main()
