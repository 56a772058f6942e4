r"""A/B of the train-step XLA:CPU option for large activations, one process.

  PYTHONPATH=. python benchmarks/probes/train_option.py \
      --arch=resnet20 --width=16 --size=32 --channels=3 --batch=128

The trainer's `train_step` (SGD + Nesterov momentum, no augmentation) in the
launchers' default process (`cpu_setup.configure_host_devices()`, training
on one device) is compiled twice, with XLA's defaults and with the option
`cpu_setup.train_step_compiler_options` uses (YNNPACK elementwise fusions),
whatever the size; the two are then timed alternately for `--rounds`
rounds of `--reps` steps. Prints compile seconds, median img/s, the ratio
and every round. The "2026-12-01, evening" table of
benchmarks/train_results.md came from an uncommitted copy of this script.
"""

import argparse
import functools
import time

import bench_model  # benchmarks/probes/, the script's own folder.


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bench_model.add_flags(parser, arch="resnet20", size=32, channels=3)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--reps", type=int, default=0,
                      help="steps per round; 0: about 2000 images.")
  args = parser.parse_args()
  bench_model.configure_process()
  # pylint: disable=g-import-not-at-top
  from robustjax import cpu_setup
  from robustjax import parallel
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from robustjax.train import optim
  from robustjax.train import state as state_lib
  from robustjax.train import steps
  # pylint: enable=g-import-not-at-top

  model, images, labels = bench_model.model_and_batch(args, args.batch)
  variables = jax.device_get(
      model.init(jax.random.key(0), jnp.zeros((1,) + images.shape[1:])))
  cfg = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
      weight_decay=5e-4, schedule="cosine", warmup_steps=0,
      grad_clip_norm=0.0))
  tx = optim.make(cfg, 10_000)
  mesh = parallel.train_mesh()
  x, y = parallel.shard_batch(mesh, images, labels)
  options = {cpu_setup._YNN_OPTION: ",".join(cpu_setup._YNN_ELTWISE_TYPES)}  # pylint: disable=protected-access
  runs = {}
  for name, opts in (("plain", None), ("eltwise", options)):
    state = parallel.replicate(mesh, state_lib.create(
        variables["params"], variables["batch_stats"], tx,
        jax.random.PRNGKey(0)))
    step = jax.jit(functools.partial(
        steps.train_step, model=model, tx=tx,
        loss_fn=lambda lg, lb, x, a: steps.cross_entropy(lg, lb),
        crop_padding=0, flip=False),
                   out_shardings=(parallel.replicated(mesh),) * 2,
                   donate_argnums=0, compiler_options=opts)
    start = time.perf_counter()
    compiled = step.lower(state, x, y, None).compile()
    compile_s = time.perf_counter() - start
    box = [state]

    def run(n, compiled=compiled, box=box):
      for _ in range(n):
        box[0], _ = compiled(box[0], x, y, None)
      jax.block_until_ready(box[0])
    run(2)
    runs[name] = (run, compile_s, [])
  reps = args.reps or max(2, 2000 // args.batch)
  for _ in range(args.rounds):
    for run, _, rates in runs.values():
      start = time.perf_counter()
      run(reps)
      rates.append(reps * args.batch / (time.perf_counter() - start))
  base = float(np.median(runs["plain"][2]))
  for name, (_, compile_s, rates) in runs.items():
    print(f"{args.arch} w{args.width} {args.size}px b{args.batch} {name:8s} "
          f"compile {compile_s:4.1f}s img/s {np.median(rates):7.1f} "
          f"x{np.median(rates) / base:.2f} {[round(r) for r in rates]}")


if __name__ == "__main__":
  main()
