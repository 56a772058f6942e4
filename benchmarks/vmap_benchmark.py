r"""K models as one vmapped program vs K sequential runs (training steps).

  python benchmarks/vmap_benchmark.py                   # K = 2, 4, 8
  python benchmarks/vmap_benchmark.py --ks=2,4 --steps=20 --width=8
  python benchmarks/vmap_benchmark.py --conv_micro      # one conv layer

Model: the digits ResNet-8 (16x16 grey, batch 64) of configs/digits_sweep.py,
the trainer's own `train_step` (SGD-Nesterov, BatchNorm, weight decay).
Modes, each measured in a fresh subprocess (so peak RSS is its own):

* `sequential`: the K models trained one after another with one jitted
  single-model step (compiled once; a sweep of separate processes would
  compile K times, see the "K x compile" column);
* `vmap_shared`: one program for K models sharing each batch (K pruning
  sparsities of one seed: the masks differ, the data order does not);
* `vmap_seeds`: one program for K models with their own batches (K seeds;
  same K sparsities).
* `vmap_shared_xla`: as `vmap_shared` but with XLA's own batching of the
  convolutions (grouped convolutions) instead of `batched.unrolled_conv`,
  which `train.train_members` uses on CPU (`models.batched.for_vmap`).

Reported: compile time of the step, steady-state wall time (and process CPU
time, less sensitive to other load) of `--steps` steps for all K models,
images/s over all models, peak RSS of the process
(`resource.getrusage`) and XLA's temp buffer size for the compiled step
(`compiled.memory_analysis()`). Check that the machine is idle first; the
results go to benchmarks/vmap_results.md by hand.
"""
# pylint: disable=g-import-not-at-top  (JAX is imported in the workers.)

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import harness  # benchmarks/, the script's own folder.

REPO = harness.REPO
sys.path.insert(0, REPO)


def _configs(k, mode, width):
  from configs import digits_sweep
  out = []
  for i in range(k):
    c = digits_sweep.get_config(f"width={width}")
    # The same K sparsities in every mode (same work); seeds differ only in
    # vmap_seeds (one batch stream per model).
    c.seed = i if mode == "vmap_seeds" else 0
    c.compress.init_sparsity = 0.5 + 0.4 * i / k
    out.append(c)
  return out


def measure(k, mode, steps, width):
  """Runs one measurement in this process; returns a dict."""
  import jax
  import numpy as np
  from robustjax.compress import pruning
  from robustjax.data import loader
  from robustjax.data import pipeline
  from robustjax.models import batched
  from robustjax.models import factory
  from robustjax.train import optim
  from robustjax.train import state as state_lib

  configs = _configs(k, mode, width)
  config = configs[0]
  model = factory.build_model(config)
  base_tx = optim.make(config.optimizer, 1000)
  txs = [pruning.magnitude_pruner(c.compress.init_sparsity).wrap_tx(base_tx)
         for c in configs]
  tx = txs[0]
  train, _ = loader.load_data(config)

  def init_states(model):  # As train.train_members builds them.
    states = []
    for c, t in zip(configs, txs):
      init_rng, rng = jax.random.split(jax.random.PRNGKey(c.seed))
      v = factory.init_variables(model, c, init_rng)
      states.append(state_lib.create(v["params"], v["batch_stats"], t, rng))
    return batched.stack(states)
  streams = {c.seed: pipeline.TrainBatches(train, config.batch_size, c.seed)
             for c in configs}

  if mode == "sequential":
    stacked = init_states(model)
    states = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(k)]
    step = jax.jit(_single_step(config, model, tx))
    batch = streams[0].batch(0)
    t0 = time.time()
    compiled = step.lower(states[0], *batch).compile()
    compile_s = time.time() - t0
    for i in range(k):  # Warm-up.
      states[i], _ = compiled(states[i], *batch)
    jax.block_until_ready(states)
    t0, c0 = time.time(), harness.cpu_seconds()
    for i in range(k):
      for s in range(steps):
        states[i], m = compiled(states[i], *streams[configs[i].seed].batch(s))
      jax.block_until_ready(m)
    run_s = time.time() - t0
  else:
    shared = mode != "vmap_seeds"
    if mode != "vmap_shared_xla":  # As train.train_members does.
      model = batched.for_vmap(model)
    state = init_states(model)
    axis = None if shared else 1
    step = jax.jit(jax.vmap(_single_step(config, model, tx),
                            in_axes=(0, axis, axis)))

    def batch(s):
      if shared:
        return streams[0].batch(s)
      parts = [streams[c.seed].batch(s) for c in configs]
      return (np.stack([p[0] for p in parts], 1),
              np.stack([p[1] for p in parts], 1))
    t0 = time.time()
    compiled = step.lower(state, *batch(0)).compile()
    compile_s = time.time() - t0
    state, _ = compiled(state, *batch(0))  # Warm-up.
    jax.block_until_ready(state)
    t0, c0 = time.time(), harness.cpu_seconds()
    for s in range(steps):
      state, m = compiled(state, *batch(s))
    jax.block_until_ready(m)
    run_s = time.time() - t0
  run_cpu_s = harness.cpu_seconds() - c0
  mem = compiled.memory_analysis()
  return dict(
      k=k, mode=mode, steps=steps, width=width, compile_s=compile_s,
      run_s=run_s, run_cpu_s=run_cpu_s,
      img_per_s=k * steps * config.batch_size / run_s,
      temp_mb=(mem.temp_size_in_bytes / 2**20) if mem else None,
      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _single_step(config, model, tx):
  import functools
  from robustjax.train import steps
  step = functools.partial(
      steps.train_step, model=model, tx=tx,
      loss_fn=lambda lg, lb, x, a: steps.cross_entropy(lg, lb),
      crop_padding=config.dataset.crop_padding, flip=config.dataset.flip)
  return lambda state, x, y: step(state, x, y, None)


def conv_micro(ks, repeats=30):
  """vmapped 3x3 conv (ResNet-8 w8 stage-1 shape) vs K separate convs."""
  import jax
  import jax.numpy as jnp
  from robustjax.models import batched

  def bench(f, *a):
    f = jax.jit(f)
    jax.block_until_ready(f(*a))
    t0 = time.time()
    for _ in range(repeats):
      r = f(*a)
    jax.block_until_ready(r)
    return (time.time() - t0) / repeats * 1e3

  dn = ("NHWC", "HWIO", "NHWC")
  xla = lambda x, w: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, w, (1, 1), "SAME", dimension_numbers=dn)
  ours = lambda x, w: batched.unrolled_conv(  # pylint: disable=g-long-lambda
      x, w, (1, 1), "SAME", dimension_numbers=dn)
  print("| K | fwd: vmap (XLA) ms | fwd: unrolled_conv ms | "
        "grad x,w: vmap (XLA) ms | grad x,w: unrolled_conv ms |")
  print("|---|---|---|---|---|")
  for k in ks:
    x = jax.random.normal(jax.random.PRNGKey(0), (k, 64, 16, 16, 8))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, 3, 3, 8, 8))
    grad = lambda c: jax.vmap(jax.grad(  # pylint: disable=g-long-lambda
        lambda x, w: jnp.sum(c(x, w) ** 2), argnums=(0, 1)))
    print(f"| {k} | {bench(jax.vmap(xla), x, w):.2f} | "
          f"{bench(jax.vmap(ours), x, w):.2f} | {bench(grad(xla), x, w):.2f} "
          f"| {bench(grad(ours), x, w):.2f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ks", default="2,4,8")
  parser.add_argument(
      "--modes", default="sequential,vmap_shared,vmap_seeds,vmap_shared_xla")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--width", type=int, default=8)
  parser.add_argument("--worker", default="")
  parser.add_argument("--conv_micro", action="store_true",
                      help="Only the convolution micro-benchmark.")
  args = parser.parse_args()
  if args.conv_micro:
    conv_micro([int(x) for x in args.ks.split(",")])
    return
  if args.worker:
    k, mode = args.worker.split(":")
    print("RESULT " + json.dumps(measure(int(k), mode, args.steps,
                                         args.width)))
    return
  print(f"# {harness.cpu_name()}, {os.cpu_count()} CPUs, load "
        f"{harness.load():.2f}")
  rows = []
  for k in (int(x) for x in args.ks.split(",")):
    for mode in args.modes.split(","):
      out = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f"--worker={k}:{mode}",
           f"--steps={args.steps}", f"--width={args.width}"],
          capture_output=True, text=True, check=True, cwd=REPO,
          env=dict(os.environ, PYTHONPATH=REPO))
      row = json.loads(out.stdout.split("RESULT ", 1)[1])
      rows.append(row)
      print(json.dumps(row), flush=True)
  print("\n| K | mode | compile s | K x compile s | "
        f"{args.steps} steps x K models: wall s | CPU s | "
        "img/s (all models) | peak RSS MB | XLA temp MB |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    kc = r["compile_s"] * r["k"] if r["mode"] == "sequential" else None
    print(f"| {r['k']} | {r['mode']} | {r['compile_s']:.1f} | "
          f"{'' if kc is None else f'{kc:.1f}'} | {r['run_s']:.2f} | "
          f"{r['run_cpu_s']:.2f} | "
          f"{r['img_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
          f"{r['temp_mb']:.1f} |")
  print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
