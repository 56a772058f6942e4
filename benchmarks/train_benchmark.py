"""Training and inference speed: robustjax vs PyTorch on the same CPU, one run.

  python benchmarks/train_benchmark.py --torch_python=$TORCH_PYTHON \
      --variants=default --rounds=21 --output=train.json  # train_results.md

(`$TORCH_PYTHON`: the python of a venv with torch.)

What is timed (all in this one process tree, on the same machine):

* Training: the trainer's own `robustjax.train.steps.train_step` (SGD with
  Nesterov momentum 0.9, weight decay 5e-4 on kernels, cross-entropy, the
  config's defaults: no augmentation), jitted as the trainer jits it by
  default (`steps.jit_step`: state donated, outputs replicated on the
  mesh), on CIFAR-style ResNet-20 (width 16) for two shapes: `cifar`
  (32x32x3, batch 128) and `digits` (16x16x1, batch 64, what
  configs/digits_resnet.py trains).
  PyTorch: the same network (eager, `torch.optim.SGD` with the same
  hyper-parameters), the same batch and shape, in a worker process of a
  separate venv with torch (`--torch_python`; torch is never a dependency of
  the library).
* Inference: `models.inference_fn` (BatchNorm running statistics), batch 500
  (the configs' `eval_batch_size`), sharded over the devices as the
  evaluators shard it; PyTorch: `model.eval()` under `torch.no_grad()`.
* The machine's float32 matmul peak, measured in the same run: a 2048^2
  matmul by XLA (all threads) and by torch; the larger is "peak".
  Throughput is also given as a fraction of it, counting a training image as
  3x the forward FLOPs and taking forward FLOPs from XLA's cost analysis.

Our variants, each a worker process of its own (JAX fixes devices and
XLA flags at start-up):

* `before`: JAX's defaults: one XLA CPU device, flax's `nn.Conv`, no XLA
  flags.
* `default`: what the launchers do with no flag or variable from the user:
  `cpu_setup.configure_host_devices()`, one XLA CPU device per core with
  YNNPACK convolutions off (and, CPU-only, LLVM level 1), flax's
  `nn.Conv`; training on one device (`train_mesh()`), inference split over
  all of them; restarted with mimalloc (`cpu_setup.cpu_malloc_environ()`)
  where the launchers would restart with it.
* `one_device`: `--cpu_devices=1`, `configure_host_devices(1)`: the same
  flags, one device.
* `per_core`: `--cpu_train_devices=-1`, training split over every device
  too.
* `no_eltwise`: `default` without the train-step XLA option for large
  activations (`cpu_setup.train_step_compiler_options`, YNNPACK elementwise
  fusions; it applies to the cifar scenario only).
* `glibc_huge_pages`: `default` restarted with glibc's malloc and
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (`--cpu_malloc=glibc_huge_pages`:
  XLA:CPU's large per-call buffers on transparent huge pages).
* `no_huge_pages`: `default` with glibc's malloc as it is
  (`--cpu_malloc=system`).
* with `--ablations`: `fast_conv` (`default` + `robustjax.models.conv.Conv`)
  and `per_core_no_flags` (one device per core, no XLA flag).

Workers (`harness.Worker`) answer one timed request at a time and requests
go round-robin over variants and PyTorch, so all see the same machine load;
the report gives median img/s, the median of per-round ratios to PyTorch
with its interval (`harness.interval_line`), CPU ms per image and the
1-minute load average. Compile times are measured separately
(`lower().compile()`, no persistent cache) and excluded from img/s.

The same file is the worker (`--worker=ours|torch`): the torch venv has no
JAX and the JAX venv no torch, so both are imported lazily.
"""

import argparse
import json
import os
import statistics
import sys
import time

import harness  # benchmarks/, the script's own folder.

REPO = harness.REPO
SCENARIOS = {  # name: (image size, channels, train batch)
    "cifar": (32, 3, 128),
    "digits": (16, 1, 64),
}
EVAL_BATCH = 500
# `--smoke` (tests/benchmarks_test.py): tiny shapes, one round, `default` only;
# checks that the benchmark still runs against the library, times nothing.
SMOKE_SCENARIOS = {"cifar": (8, 3, 8), "digits": (8, 1, 8)}
SMOKE_EVAL_BATCH = 16


def _use_smoke_shapes():
  global SCENARIOS, EVAL_BATCH
  SCENARIOS, EVAL_BATCH = SMOKE_SCENARIOS, SMOKE_EVAL_BATCH
MEAN, STD = 0.45, 0.25  # One value per channel (speed does not depend on it).
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def _serve(runners, info):
  """The worker's loop (`harness.serve`): a request is {"what", "reps"}."""
  harness.serve(lambda what, reps: runners[what](reps), info)


# ----------------------------------------------------------------------------
# Ours (JAX venv).


def train_step(size, channels, batch, conv, rng, train_mesh):
  """ResNet-20 (width 16) and its train step as the trainer jits it.

  Returns the model, host copies of its variables (the step donates its
  state's buffers), the jitted (not yet compiled) step, the replicated
  state, the sharded batch drawn from `rng` (uint8 images, int labels) and
  the step's XLA compiler options. Import after `sys.path` holds the
  repository and JAX is configured.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from robustjax import cpu_setup
  from robustjax import models
  from robustjax import parallel
  from robustjax.train import optim
  from robustjax.train import state as state_lib
  from robustjax.train import steps
  # pylint: enable=g-import-not-at-top
  model = models.get_model("resnet20", num_classes=10, width=16,
                           mean=(MEAN,) * channels, std=(STD,) * channels,
                           conv=conv)
  images = rng.integers(0, 256, (batch, size, size, channels), np.uint8)
  labels = rng.integers(0, 10, (batch,), np.int32)
  variables = jax.device_get(model.init(
      jax.random.key(0), jnp.zeros((1, size, size, channels))))
  cfg = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=LR, momentum=MOMENTUM, nesterov=True,
      weight_decay=WEIGHT_DECAY, schedule="cosine", warmup_steps=0,
      grad_clip_norm=0.0))
  tx = optim.make(cfg, 10_000)
  state = parallel.replicate(train_mesh, state_lib.create(
      variables["params"], variables["batch_stats"], tx,
      jax.random.PRNGKey(0)))
  # As the trainer (`steps.shared_train_step`): XLA:CPU options for a step
  # with large activations in a configured process, else None.
  options = cpu_setup.train_step_compiler_options(
      batch // train_mesh.devices.size * size * size * 16,
      train_mesh.devices.flat[0].platform)
  # As the trainer compiles it by default (`steps.shared_train_step`).
  step = steps.jit_step(
      model, lambda lg, lb, x, a: steps.cross_entropy(lg, lb), tx,
      train_mesh, crop_padding=0, flip=False, options=options)
  return (model, variables, step, state,
          parallel.shard_batch(train_mesh, images, labels), options)


def _ours_worker(args):
  """Builds the trainer's step and the evaluator's forward per scenario."""
  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from robustjax import cpu_setup
  # glibc_huge_pages, no_huge_pages: the same process, started with another
  # allocator (main()).
  if args.variant in ("default", "fast_conv", "glibc_huge_pages",
                      "no_huge_pages"):
    cpu_setup.configure_host_devices()
  elif args.variant == "no_eltwise":
    cpu_setup.configure_host_devices()
    cpu_setup.ELTWISE_FUSION_MIN_ELEMENTS = 1 << 62  # Never reached.
  elif args.variant == "one_device":
    cpu_setup.configure_host_devices(num_devices=1)
  elif args.variant == "per_core":  # Training sharded over every device too.
    cpu_setup.configure_host_devices(train_devices=None)
  elif args.variant == "per_core_no_flags":
    cpu_setup.configure_host_devices(train_devices=None)
    os.environ["XLA_FLAGS"] = " ".join(  # Before JAX starts: devices kept.
        f for f in os.environ["XLA_FLAGS"].split()
        if f.split("=")[0] not in
        {g.split("=")[0] for g in cpu_setup.CPU_XLA_FLAGS})
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from robustjax import models
  from robustjax import parallel
  from robustjax.models import conv as conv_lib
  # pylint: enable=g-import-not-at-top

  mesh, train_mesh = parallel.make_mesh(), parallel.train_mesh()
  fast_conv = args.variant == "fast_conv"
  runners, info = {}, dict(devices=jax.device_count(),
                           xla_flags=os.environ.get("XLA_FLAGS", ""),
                           jax=jax.__version__, compile_s={}, flops={},
                           glibc_tunables=os.environ.get("GLIBC_TUNABLES",
                                                         ""),
                           malloc=cpu_setup.cpu_malloc_in_use())
  rng = np.random.default_rng(0)
  for name, (size, channels, batch) in SCENARIOS.items():
    conv = conv_lib.Conv if fast_conv else nn.Conv
    model, variables, step, state, (x, y), options = train_step(
        size, channels, batch, conv, rng, train_mesh)
    info.setdefault("train_compiler_options", {})[name] = options
    start = time.perf_counter()
    step = step.lower(state, x, y, None).compile()
    info["compile_s"][f"{name}/train"] = time.perf_counter() - start
    box = [state]

    def train(reps, step=step, box=box, x=x, y=y):
      for _ in range(reps):
        box[0], metrics = step(box[0], x, y, None)
      jax.block_until_ready(metrics)

    train(2)  # Warm-up.
    runners[f"{name}/train"] = train

    apply_fn = models.inference_fn(model)
    eval_images = rng.uniform(size=(EVAL_BATCH, size, size, channels)).astype(
        np.float32)
    ex = parallel.shard_batch(mesh, eval_images)
    forward = jax.jit(lambda v, x, f=apply_fn: jnp.argmax(f(v, x), -1))
    start = time.perf_counter()
    forward = forward.lower(variables, ex).compile()
    info["compile_s"][f"{name}/eval"] = time.perf_counter() - start
    # FLOPs of one image's forward pass, from a 1-device program.
    one = jax.jit(apply_fn).lower(variables, jnp.zeros(
        (1, size, size, channels))).compile().cost_analysis()
    one = one[0] if isinstance(one, (list, tuple)) else one
    info["flops"][name] = float(one["flops"])
    variables_r = parallel.replicate(mesh, variables)

    def evaluate(reps, forward=forward, v=variables_r, ex=ex):
      for _ in range(reps):
        out = forward(v, ex)
      jax.block_until_ready(out)

    evaluate(1)
    runners[f"{name}/eval"] = evaluate

  # Matmul peak (float32, 2048^2, all threads of one device).
  a = jnp.asarray(rng.standard_normal((2048, 2048)), jnp.float32)
  matmul = jax.jit(jnp.dot).lower(a, a).compile()
  jax.block_until_ready(matmul(a, a))
  best = float("inf")
  for _ in range(10):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    best = min(best, time.perf_counter() - start)
  info["matmul_gflops"] = 2 * 2048**3 / best / 1e9
  _serve(runners, info)


# ----------------------------------------------------------------------------
# PyTorch (torch venv).


def _torch_worker(args):
  """The same ResNet-20, optimizer, batches; eager PyTorch."""
  # pylint: disable=g-import-not-at-top
  del args
  import torch
  from torch import nn
  import torch.nn.functional as F
  # pylint: enable=g-import-not-at-top

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return F.relu(y + (x if self.proj is None else self.proj(x)))

  class ResNet20(nn.Module):

    def __init__(self, channels, width=16):
      super().__init__()
      self.conv_init = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
      self.bn_init = nn.BatchNorm2d(width)
      blocks, cin = [], width
      for i in range(3):
        for j in range(3):
          blocks.append(Block(cin, width * 2**i, 2 if i and not j else 1))
          cin = width * 2**i
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(cin, 10)

    def forward(self, x):
      x = F.relu(self.bn_init(self.conv_init((x - MEAN) / STD)))
      return self.head(self.blocks(x).mean((2, 3)))

  torch.manual_seed(0)
  runners = {}
  for name, (size, channels, batch) in SCENARIOS.items():
    model = ResNet20(channels)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([dict(params=decay, weight_decay=WEIGHT_DECAY),
                           dict(params=rest, weight_decay=0.0)], lr=LR,
                          momentum=MOMENTUM, nesterov=True)
    images = torch.randint(0, 256, (batch, channels, size, size),
                           dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch,))

    def train(reps, model=model, opt=opt, images=images, labels=labels):
      model.train()
      for _ in range(reps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images.float() / 255.0), labels)
        loss.backward()
        opt.step()

    eval_images = torch.rand(EVAL_BATCH, channels, size, size)

    def evaluate(reps, model=model, x=eval_images):
      model.eval()
      with torch.no_grad():
        for _ in range(reps):
          model(x).argmax(-1)

    train(2)
    evaluate(1)
    runners[f"{name}/train"], runners[f"{name}/eval"] = train, evaluate
  a = torch.randn(2048, 2048)
  best = float("inf")
  for _ in range(10):
    start = time.perf_counter()
    torch.mm(a, a)
    best = min(best, time.perf_counter() - start)
  _serve(runners, dict(torch=torch.__version__,
                       threads=torch.get_num_threads(),
                       # The preloaded libraries' names, not their paths.
                       ld_preload=" ".join(os.path.basename(p) for p in
                                           os.environ.get("LD_PRELOAD",
                                                          "").split()),
                       matmul_gflops=2 * 2048**3 / best / 1e9))


# ----------------------------------------------------------------------------
# Driver.


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--torch_python", default="",
                      help="python of a venv with torch; empty: skip it.")
  parser.add_argument("--torch_malloc", default="system",
                      choices=("system", "mimalloc"),
                      help="the allocator of the PyTorch worker: glibc as a "
                      "user runs it, or our mimalloc preload (to see "
                      "whether PyTorch gains from it too).")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--train_reps", type=int, default=5,
                      help="train steps per timed run.")
  parser.add_argument("--eval_reps", type=int, default=3,
                      help="eval batches per timed run.")
  parser.add_argument("--ablations", action="store_true",
                      help="also time `default` minus each of its parts.")
  parser.add_argument("--variants", default="",
                      help="comma-separated subset of our variants to time "
                      "(default: all but the ablations); e.g. "
                      "default,no_huge_pages for a longer A/B.")
  parser.add_argument("--output", default="", help="also write JSON here.")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes, one round of one step, `default` "
                      "only: checks that the benchmark runs (tests).")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.smoke:
    _use_smoke_shapes()
    args.rounds, args.train_reps, args.eval_reps = 1, 1, 1
  if args.worker == "ours":
    return _ours_worker(args)
  if args.worker == "torch":
    return _torch_worker(args)

  variants = ["before", "default", "glibc_huge_pages", "no_eltwise",
              "one_device", "per_core"]
  if args.smoke:
    variants = ["default"]
  elif args.variants:
    variants = args.variants.split(",")
  elif args.ablations:
    variants += ["fast_conv", "per_core_no_flags"]
  me = [sys.executable, os.path.abspath(__file__)]
  load_start = os.getloadavg()
  workers = {}
  sys.path.insert(0, REPO)
  from robustjax import cpu_setup  # pylint: disable=g-import-not-at-top
  smoke = ["--smoke"] if args.smoke else []
  for v in variants:
    env = harness.clean_env()
    malloc = {"before": "system", "no_huge_pages": "system",
              "glibc_huge_pages": "glibc_huge_pages"}.get(v, "mimalloc")
    env = cpu_setup.cpu_malloc_environ(malloc, env) or env  # As launchers do.
    workers[v] = harness.Worker(
        me + ["--worker=ours", f"--variant={v}"] + smoke, env)
    print(v, json.dumps(workers[v].info), flush=True)
  if args.torch_python:
    workers["torch"] = harness.Worker(
        [args.torch_python, os.path.abspath(__file__), "--worker=torch"] +
        smoke, cpu_setup.cpu_malloc_environ(args.torch_malloc,
                                            harness.clean_env())
        or harness.clean_env())
    print("torch", json.dumps(workers["torch"].info), flush=True)
  whats = [f"{s}/{k}" for s in SCENARIOS for k in ("train", "eval")]
  runs = {(w, what): [] for w in workers for what in whats}
  for r in range(args.rounds):
    for what in whats:
      reps = args.train_reps if what.endswith("train") else args.eval_reps
      for w, worker in workers.items():
        load = os.getloadavg()[0]
        runs[(w, what)].append(dict(worker.request(what=what, reps=reps),
                                    load=load, reps=reps))
    print(f"round {r + 1}/{args.rounds} done, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
  for worker in workers.values():
    worker.close()
  report = dict(
      machine=harness.machine(), date=time.strftime("%Y-%m-%d %H:%M"),
      load_start=load_start, load_end=os.getloadavg(),
      info={w: worker.info for w, worker in workers.items()},
      runs={f"{w}|{what}": v for (w, what), v in runs.items()})
  print(_markdown(report, variants, whats, "torch" in workers), flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=1)


def round_ratios(report, a, b, what, key="seconds"):
  """Per round, b's time per rep / a's (a's speed-up over b)."""
  return [(y[key] / y["reps"]) / (x[key] / x["reps"]) for x, y in zip(
      report["runs"][f"{a}|{what}"], report["runs"][f"{b}|{what}"])]


def ab_speedups(report, a, b, whats):
  """{what: (wall, CPU)} medians over rounds of b's time / a's time."""
  return {what: tuple(statistics.median(round_ratios(report, a, b, what, k))
                      for k in ("seconds", "cpu_seconds"))
          for what in whats}


def _markdown(report, variants, whats, with_torch):
  """The report as markdown tables."""
  info = report["info"]
  first = info["default"] if "default" in info else info[variants[0]]
  peak = max([info[v]["matmul_gflops"] for v in variants] +
             ([info["torch"]["matmul_gflops"]] if with_torch else []))
  lines = [
      "| task | who | compile s | img/s (median) | vs PyTorch (median of "
      "per-round ratios) | vs `before` | CPU ms / img | % of matmul peak | "
      "load |", "|---|---|---|---|---|---|---|---|---|"]
  for what in whats:
    name, kind = what.split("/")
    size, _, batch = SCENARIOS[name]
    batch = batch if kind == "train" else EVAL_BATCH
    flops = info[variants[0]]["flops"][name] * (3 if kind == "train" else 1)
    who = variants + (["torch"] if with_torch else [])
    for w in who:
      runs = report["runs"][f"{w}|{what}"]
      ips = [r["reps"] * batch / r["seconds"] for r in runs]
      median = statistics.median(ips)
      cpu = statistics.median(r["cpu_seconds"] / (r["reps"] * batch)
                              for r in runs) * 1e3
      loads = [r["load"] for r in runs]

      def ratio(other, w=w, what=what):
        return ab_speedups(report, w, other, [what])[what][0]
      vs_torch = (f"{ratio('torch'):.2f}x" if with_torch and w != "torch"
                  else "-")
      vs_before = (f"{ratio('before'):.2f}x" if "before" in variants and
                   w != "before" else "-")
      compile_s = (f"{info[w]['compile_s'][what]:.1f}" if w != "torch"
                   else "-")
      label = (f"{w} ({info[w]['devices']} dev)" if w != "torch" else
               f"PyTorch {info['torch']['torch']} eager")
      lines.append(
          f"| {name} {kind} ({size}px, batch {batch}) | {label} | "
          f"{compile_s} | {median:.1f} | {vs_torch} | {vs_before} | "
          f"{cpu:.2f} | {100 * median * flops / 1e9 / peak:.0f} % | "
          f"{min(loads):.1f}-{max(loads):.1f} |")
  if with_torch:  # Each ratio to PyTorch with the interval of its median.
    for what in whats:
      for w in variants:
        lines.append(harness.interval_line(
            f"{what}, {w} / PyTorch", round_ratios(report, w, "torch", what)))
  lines += ["", "matmul peak (2048^2 float32): XLA "
            f"{first['matmul_gflops']:.1f} GFLOP/s"
            + (f", torch {info['torch']['matmul_gflops']:.1f} GFLOP/s"
               if with_torch else "") + f"; peak used: {peak:.1f}",
            "forward MFLOP / image (XLA cost analysis): " + ", ".join(
                f"{k} {v / 1e6:.1f}" for k, v in
                first["flops"].items()) +
            " (training counted as 3x)",
            "machine: " + json.dumps(report["machine"]),
            "ours: " + json.dumps({v: dict(devices=info[v]["devices"],
                                           xla_flags=info[v]["xla_flags"])
                                   for v in variants}),
            f"load average at start / end: {report['load_start']} / "
            f"{report['load_end']}"]
  if len(variants) == 2:  # An A/B (`--variants=a,b`): a's speed-up over b.
    a, b = variants
    lines.append(f"per-round speed-up of {a} over {b} (median of per-round "
                 "ratios, wall / CPU time): " + ", ".join(
                     f"{what} {x:.2f}x / {y:.2f}x" for what, (x, y) in
                     ab_speedups(report, a, b, whats).items()))
  rss = {w: max(r.get("max_rss_mb", 0) for k, runs in report["runs"].items()
                if k.startswith(f"{w}|") for r in runs)
         for w in variants + (["torch"] if with_torch else [])}
  if all(rss.values()):  # Older reports have none.
    lines.append("peak resident memory per worker process (both scenarios), "
                 "MB: " + ", ".join(f"{w} {v:.0f}" for w, v in rss.items()))
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
