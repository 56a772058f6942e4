"""Speed of robustjax attacks vs torchattacks 3.5.1 on CIFAR-style ResNet-20.

Run by hand on an otherwise idle machine (results: attacks_results.md),
with `$TORCH_PYTHON` the python of a venv with torch and torchattacks:

  PYTHONPATH=. python benchmarks/attacks_benchmark.py \
      --torch_python=$TORCH_PYTHON --output=attacks.json

What is measured, all in this one process tree on the same machine:

* Attack throughput, batch 256 of 32x32x3 images: PGD-10 L-inf (eps 8/255,
  step 2/255, random start) and FGSM. Ours: the jitted `attack.perturb`,
  compile time measured separately (`lower().compile()`) and excluded from
  images/s; unrolled vs `lax.fori_loop`, and the same 256 images attacked in
  chunks of a smaller jitted batch. torchattacks: the same ResNet-20 in
  PyTorch (eval mode, identical weights, logits checked), run in a subprocess
  of the torch venv (`--torch_python`, a `harness.Worker`), also
  whole-batch and chunked.
* An eps sweep (5 radii, PGD-10): `evaluators.attack.robust_accuracy`, one
  compiled program vmapped over the grid, vs a Python loop of per-eps
  programs each compiled for its own constant eps, vs a loop over one
  program with eps traced; compile time included in all.
* By default (`--host_devices=auto`) the process is set up as the launchers
  set themselves up, with no flag from the user:
  `cpu_setup.configure_host_devices()` (one XLA CPU device per core and the
  XLA:CPU flags) before jax starts, and each jitted batch is split over
  every device with `parallel.per_example`, as the attack evaluator does
  (rows say how many devices). `--host_devices=one` gives the launchers'
  `--cpu_devices=1`, `--host_devices=1` JAX's defaults.

Ours and torchattacks run alternately, run by run (a persistent torch worker
process answers one timed run per request), so both see the same machine
load; the table gives best and median img/s of `--repeats` runs, the median
of the per-round speed ratios with its interval (`harness.interval_line`),
CPU time per image and the 1-minute load average. The script first waits
(up to `--wait_idle_s`) for the load to drop below `--max_load`; other
people's jobs on a shared machine make absolute numbers low, so re-run
until the load column is near 0.

The same file is the torch worker (`--torch_worker`), so it imports jax and
torch lazily: the torch venv has no jax and the core venv no torch.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import harness  # benchmarks/, the script's own folder.

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
EPS = 8 / 255
STEP = 2 / 255
SWEEP_EPS = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
IMAGE_SIZE = 32
PGD_STEPS = 10
# `--smoke` (tests/benchmarks_test.py): tiny images, 2-step PGD, one run of
# each measurement, no torch; checks that the script still runs against the
# library and times nothing worth keeping.
SMOKE_IMAGE_SIZE = 8
SMOKE_PGD_STEPS = 2
SMOKE_SWEEP_EPS = (0.0, 8 / 255)  # Fewer programs for the per-eps loop.


# ----------------------------------------------------------------------------
# PyTorch side (runs in the torch venv).


def _torch_worker(args):
  """Times torchattacks FGSM / PGD on a ResNet-20 with the given weights."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.proj_bn = nn.BatchNorm2d(cout)
        self.proj = True

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      r = x if self.proj is None else self.proj_bn(self.proj_conv(x))
      return F.relu(y + r)

  class ResNet20(nn.Module):
    """CIFAR ResNet-20, option-B shortcuts, like robustjax's `resnet20`."""

    def __init__(self):
      super().__init__()
      self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
      self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
      self.conv_init = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
      self.bn_init = nn.BatchNorm2d(16)
      blocks, cin = {}, 16
      for i, width in enumerate((16, 32, 64)):
        for j in range(3):
          blocks[f"stage{i + 1}_block{j + 1}"] = Block(
              cin, width, 2 if i > 0 and j == 0 else 1)
          cin = width
      self.blocks = nn.ModuleDict(blocks)
      self.head = nn.Linear(64, 10)

    def forward(self, x):
      x = F.relu(self.bn_init(self.conv_init((x - self.mean) / self.std)))
      for block in self.blocks.values():
        x = block(x)
      return self.head(x.mean((2, 3)))

  data = np.load(os.path.join(args.workdir, "data.npz"))
  model = ResNet20()
  state = {}
  for name in model.state_dict():
    key = name.replace("blocks.", "")
    if key.endswith("num_batches_tracked") or key in ("mean", "std"):
      continue
    state[name] = torch.from_numpy(data[key])
  missing = model.load_state_dict(state, strict=False).missing_keys
  missing = [k for k in missing if not k.endswith("num_batches_tracked")
             and k not in ("mean", "std")]
  assert not missing, f"weights missing for {missing}"
  model.eval()
  for p in model.parameters():
    p.requires_grad_(False)  # Input gradients only, as ours.
  torch.manual_seed(0)
  images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
  labels = torch.from_numpy(data["labels"]).long()
  with torch.no_grad():
    logits = model(images[:16]).numpy().tolist()

  attacks = dict(
      fgsm=torchattacks.FGSM(model, eps=EPS),
      pgd10=torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=10,
                             random_start=True))

  def run(attack, chunk):
    for s in range(0, len(images), chunk):
      attacks[attack](images[s:s + chunk], labels[s:s + chunk])

  harness.serve(run, dict(torch=torch.__version__,
                          torchattacks=torchattacks.__version__,
                          threads=torch.get_num_threads(), logits=logits),
                warm_up=True)


# ----------------------------------------------------------------------------
# JAX side.


def _export_for_torch(variables, images, labels, path):
  """Writes weights (PyTorch layouts, torch parameter names) and data."""
  import flax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  flat = {}
  for collection, tree in variables.items():
    for keys, value in flax.traverse_util.flatten_dict(tree).items():
      module, leaf = ".".join(keys[:-1]), keys[-1]
      value = np.asarray(value)
      if leaf == "kernel" and value.ndim == 4:
        flat[f"{module}.weight"] = value.transpose(3, 2, 0, 1)  # HWIO->OIHW
      elif leaf == "kernel":
        flat[f"{module}.weight"] = value.T
      elif collection == "batch_stats":
        name = {"mean": "running_mean", "var": "running_var"}[leaf]
        flat[f"{module}.{name}"] = value
      else:  # BatchNorm scale / bias, dense bias.
        name = "weight" if leaf == "scale" else leaf
        flat[f"{module}.{name}"] = value
  np.savez(path, images=np.asarray(images), labels=np.asarray(labels), **flat)


# The variables the benchmark's restart with `cpu_setup.cpu_malloc_environ()`
# changed, as the user had them (JSON; null: unset), so torchattacks runs in
# the user's environment.
_USER_ENV = "_ATTACKS_BENCHMARK_USER_ENV"


def _torch_worker_process(torch_python, workdir):
  """The torch venv's worker (`_torch_worker`) in the user's environment."""
  env = dict(os.environ)
  for k, v in json.loads(env.pop(_USER_ENV, "{}")).items():
    if v is None:  # Undo our restart's allocator.
      env.pop(k, None)
    else:
      env[k] = v
  return harness.Worker([torch_python, os.path.abspath(__file__),
                         "--torch_worker", f"--workdir={workdir}"], env)


def _jax_main(args):
  """Runs every measurement and prints a markdown report."""
  # pylint: disable=g-import-not-at-top
  from robustjax import cpu_setup
  if args.host_devices in ("auto", "one"):
    environ = cpu_setup.cpu_malloc_environ(args.cpu_malloc)  # As launchers.
    if environ is not None:
      # torchattacks runs in the user's environment (`_TorchWorker`).
      environ[_USER_ENV] = json.dumps(
          {k: os.environ.get(k) for k in environ
           if environ[k] != os.environ.get(k)})
      sys.stdout.flush()
      os.execve(sys.executable, sys.orig_argv, environ)
  if args.host_devices in ("auto", "per_core"):  # The launchers' default.
    cpu_setup.configure_host_devices()
  elif args.host_devices == "one":  # --cpu_devices=1.
    cpu_setup.configure_host_devices(num_devices=1)
  elif int(args.host_devices) > 1:  # Must precede jax's start.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_"
                               f"force_host_platform_device_count="
                               f"{args.host_devices}")
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from robustjax import models
  from robustjax import parallel
  from robustjax.models import conv as conv_lib
  from robustjax.robustness import attacks
  # pylint: enable=g-import-not-at-top

  harness.wait_for_idle(args.max_load, args.wait_idle_s)
  n = args.batch_size
  model = models.get_model("resnet20", num_classes=10, mean=CIFAR_MEAN,
                           std=CIFAR_STD,
                           conv=conv_lib.Conv if args.fast_conv else nn.Conv)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)),
                       jnp.float32)
  variables = model.init(jax.random.key(0), images[:2])
  # Calibrate BatchNorm's running statistics on the batch (momentum 0.9), so
  # inference-mode activations are realistic and the logit check is telling.
  calibrate = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"])[1])
  for _ in range(30):
    variables = dict(variables, **calibrate(variables, images))
  apply_fn = models.inference_fn(model)
  labels = jnp.argmax(apply_fn(variables, images), -1).astype(jnp.int32)
  key = jax.random.key(0)
  report = dict(machine=harness.machine(
      jax=jax.__version__, backend=jax.default_backend(),
      devices=jax.device_count(), xla_flags=os.environ.get("XLA_FLAGS", ""),
      conv="models.conv.Conv" if args.fast_conv else "nn.Conv",
      glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
      malloc=cpu_setup.cpu_malloc_in_use()),
                date=time.strftime("%Y-%m-%d %H:%M"),
                load_start=os.getloadavg(), rows=[])

  worker = None
  if args.torch_python:
    workdir = tempfile.mkdtemp(prefix="attacks_benchmark_")
    _export_for_torch(variables, images, labels,
                      os.path.join(workdir, "data.npz"))
    worker = _torch_worker_process(args.torch_python, workdir)
    ours = np.asarray(apply_fn(variables, images[:16]))
    report["torch"] = {k: v for k, v in worker.info.items() if k != "logits"}
    report["max_logit_diff_vs_torch"] = float(np.max(np.abs(
        ours - np.asarray(worker.info["logits"]))))

  # (label, our attack, jitted batch, torchattacks counterpart, repeats,
  # devices, apply function). As the suite's attack evaluator does, each
  # jitted batch is split over every device with `parallel.per_example` (a
  # plain jit on one device); with several devices, one PGD row on one device
  # shows the gain. `models.inference_fn` (the suite's path) computes input
  # gradients with `models.input_grad`; the "lax input gradients" row runs
  # flax's plain `model.apply`.
  pgd_args = dict(steps=PGD_STEPS, step_size=STEP, random_start=True)
  every = jax.device_count()
  pgd = lambda: attacks.pgd(unroll=True, **pgd_args)
  configs = [("FGSM", attacks.fgsm(), n, "fgsm", args.repeats, every,
              apply_fn),
             ("PGD-10 unrolled", pgd(), n, "pgd10", args.repeats, every,
              apply_fn)]
  if args.lax_row and not args.fast_conv:
    configs.append(("PGD-10 unrolled, lax input gradients", pgd(), n,
                    "pgd10", args.repeats, every,
                    functools.partial(model.apply, train=False)))
  configs += [("PGD-10 unrolled", pgd(), c, "pgd10", args.repeats, every,
               apply_fn)
              for c in args.chunk_sizes if c < n and c % every == 0]
  if every > 1:
    configs.append(("PGD-10 unrolled", pgd(), n, None, args.repeats, 1,
                    apply_fn))
  if args.fori_repeats:
    configs.append(("PGD-10 fori_loop", attacks.pgd(unroll=False, **pgd_args),
                    n, None, args.fori_repeats, every, apply_fn))

  runners = []
  for label, attack, chunk, _, _, devices, fn in configs:
    mesh = parallel.make_mesh(jax.devices()[:devices])
    perturb = lambda v, e, x, y, k, attack=attack, fn=fn: attack.perturb(
        fn, v, x, y, k, e)
    if devices > 1:
      perturb = parallel.per_example(perturb, mesh, num_replicated=2)
    perturb = jax.jit(perturb)
    data = (parallel.replicate(mesh, variables),) + tuple(
        jax.device_put(a, parallel.batch_sharded(mesh))
        for a in (images, labels, jax.random.split(key, n)))
    eps = parallel.replicate(mesh, jnp.float32(EPS))
    start = time.perf_counter()
    compiled = perturb.lower(data[0], eps, data[1][:chunk], data[2][:chunk],
                             data[3][:chunk]).compile()
    compile_s = time.perf_counter() - start

    def run(compiled=compiled, chunk=chunk, data=data, eps=eps):
      v, x, y, k = data
      jax.block_until_ready([
          compiled(v, eps, x[s:s + chunk], y[s:s + chunk], k[s:s + chunk])
          for s in range(0, n, chunk)])
    run()  # Warm-up.
    runners.append(run)
    label += f", {devices} device{'s' if devices > 1 else ''}"
    report["rows"].append(dict(label=label, chunk=chunk, devices=devices,
                               compile_s=compile_s, ours=[], torch=[]))
    print(f"compiled {label} batch {chunk}: {compile_s:.1f} s", flush=True)

  # Interleave ours and torchattacks run by run, so both see the same load.
  for r in range(max(c[4] for c in configs)):
    for row, run, (_, _, chunk, torch_name, repeats, _, _) in zip(
        report["rows"], runners, configs):
      if r >= repeats:
        continue
      load, cpu = harness.load(), harness.cpu_seconds()
      start = time.perf_counter()
      run()
      row["ours"].append(dict(seconds=time.perf_counter() - start,
                              cpu_seconds=harness.cpu_seconds() - cpu,
                              load=load))
      if worker and torch_name:
        row["torch"].append(dict(worker.request(attack=torch_name,
                                                chunk=chunk),
                                 load=harness.load()))
      print(row["label"], chunk, row["ours"][-1], row["torch"][-1:],
            flush=True)
  if worker:
    worker.close()
  report["sweep"] = (_sweep(args, apply_fn, variables, images, labels, key)
                     if args.sweep else [])
  report["load_end"] = os.getloadavg()
  print(_markdown(report, n), flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=1)


def _sweep(args, apply_fn, variables, images, labels, key):
  """Eps sweep: one vmapped program vs per-eps compiled programs."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from robustjax import parallel
  from robustjax.robustness import attacks
  from robustjax.robustness.evaluators import attack as attack_eval
  # pylint: enable=g-import-not-at-top
  attack = attacks.pgd(steps=PGD_STEPS, unroll=True)  # Step 2.5 eps / steps.
  chunk = args.sweep_chunk or None
  results = []

  def record(label, fn):
    load = harness.load()
    start = time.perf_counter()
    accuracy = jax.block_until_ready(fn())
    seconds = time.perf_counter() - start
    results.append(dict(label=label, seconds=seconds,
                        img_s=len(SWEEP_EPS) * len(images) / seconds,
                        accuracy=[round(float(a), 4) for a in accuracy],
                        load_before=load, load_after=harness.load()))
    print(results[-1], flush=True)

  # A fresh apply_fn object for each variant, so nothing is cached yet.
  fresh = lambda: functools.partial(apply_fn)
  one = parallel.make_mesh(jax.devices()[:1])  # Like the per-eps loop below.
  record("robust_accuracy, vmap over 5 eps, 1 compile",
         lambda: attack_eval.robust_accuracy(
             fresh(), variables, images, labels, key, SWEEP_EPS, attack,
             chunk, one))

  def loop_constant_eps():
    accuracy = []
    fn = fresh()
    for eps in SWEEP_EPS:
      count = jax.jit(lambda v, x, y, k, eps=eps: jnp.mean(jnp.argmax(
          fn(v, attack.perturb(fn, v, x, y, k, eps)), -1) == y))
      accuracy.append(_chunked_mean(count, variables, images, labels, key,
                                    chunk))
    return jnp.stack(accuracy)
  record("python loop, 5 programs (eps constant)", loop_constant_eps)

  def loop_traced_eps():
    fn = fresh()
    return jnp.concatenate([attack_eval.robust_accuracy(
        fn, variables, images, labels, key, [eps], attack, chunk, one)
                            for eps in SWEEP_EPS])
  record("python loop, 1 program (eps traced)", loop_traced_eps)
  if jax.device_count() > 1:
    record(f"robust_accuracy, vmap over 5 eps, {jax.device_count()} devices",
           lambda: attack_eval.robust_accuracy(
               fresh(), variables, images, labels, key, SWEEP_EPS, attack,
               chunk))
  return results


def _chunked_mean(count, variables, images, labels, key, chunk):
  import jax  # pylint: disable=g-import-not-at-top
  chunk = chunk or len(images)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jax.numpy.arange(
      len(images)))
  means = [count(variables, images[s:s + chunk], labels[s:s + chunk],
                 keys[s:s + chunk]) * len(images[s:s + chunk])
           for s in range(0, len(images), chunk)]
  return sum(means) / len(images)


def round_ratios(row):
  """Per round, torchattacks' time / ours (our speed-up) for a report row."""
  return [t["seconds"] / o["seconds"]
          for o, t in zip(row["ours"], row["torch"])]


def _markdown(report, n):
  """Formats the report as markdown tables."""
  def stats(runs):
    seconds = sorted(r["seconds"] for r in runs)
    return (n / seconds[0], n / statistics.median(seconds),
            statistics.median(r["cpu_seconds"] for r in runs) / n * 1e3)

  lines = ["| attack | jitted batch | ours: compile s | ours: best / median "
           "img/s | torchattacks: best / median img/s | ours / torch "
           "(median of per-round ratios) | CPU ms per image, ours / torch | "
           "load avg during runs |", "|---|---|---|---|---|---|---|---|"]
  for row in report["rows"]:
    best, median, cpu = stats(row["ours"])
    loads = [r["load"] for r in row["ours"] + row["torch"]]
    cells = [row["label"], str(row["chunk"]), f"{row['compile_s']:.1f}",
             f"{best:.1f} / {median:.1f}"]
    if row["torch"]:
      t_best, t_median, t_cpu = stats(row["torch"])
      ratio = statistics.median(round_ratios(row))
      cells += [f"{t_best:.1f} / {t_median:.1f}", f"{ratio:.2f}",
                f"{cpu:.1f} / {t_cpu:.1f}"]
    else:
      cells += ["-", "-", f"{cpu:.1f} / -"]
    cells.append(f"{min(loads):.1f}-{max(loads):.1f}")
    lines.append("| " + " | ".join(cells) + " |")
  for row in report["rows"]:
    if row["torch"]:
      lines.append(harness.interval_line(
          f"{row['label']}, batch {row['chunk']}: ours / torch",
          round_ratios(row)))
  lines += ["", "| eps sweep (PGD-10, 5 eps, compile included) | seconds | "
            "img x eps / s | accuracy per eps | load before/after |",
            "|---|---|---|---|---|"]
  for r in report["sweep"]:
    lines.append(f"| {r['label']} | {r['seconds']:.1f} | {r['img_s']:.1f} | "
                 f"{r['accuracy']} | {r['load_before']}/{r['load_after']} |")
  lines += ["", "machine: " + json.dumps(report["machine"]),
            "torch: " + json.dumps(report.get("torch")),
            f"load average at start / end: {report['load_start']} / "
            f"{report['load_end']}"]
  if "max_logit_diff_vs_torch" in report:
    lines.append(f"max |logit diff| JAX vs PyTorch ResNet-20: "
                 f"{report['max_logit_diff_vs_torch']:.2e}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--torch_python", default="",
                      help="python of a venv with torch + torchattacks; "
                      "empty: skip the PyTorch comparison.")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--chunk_sizes", type=lambda s: [int(c) for c in
                                                       s.split(",") if c],
                      default=[64], help="also attack the batch in chunks "
                      "of these sizes (both frameworks).")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--host_devices", default="auto",
                      help="auto (or per_core): the launchers' default "
                      "(--cpu_devices=-1), cpu_setup.configure_host_devices(): "
                      "one XLA CPU device per core + the XLA:CPU flags, no "
                      "flag from the user; one: configure_host_devices(1) "
                      "(--cpu_devices=1); N: N devices via XLA_FLAGS and no "
                      "other flag (1: JAX's defaults). Batches are split "
                      "over every device, as the attack evaluator does; "
                      "with >1 device a one-device PGD row is added.")
  parser.add_argument("--cpu_malloc", default="mimalloc",
                      choices=("mimalloc", "glibc_huge_pages", "system"),
                      help="with auto/one: restart with "
                      "cpu_setup.cpu_malloc_environ(CPU_MALLOC), as the "
                      "launchers do (--cpu_malloc); system: the allocator "
                      "the benchmark was started with.")
  parser.add_argument("--fast_conv", action="store_true",
                      help="robustjax.models.conv.Conv instead of flax's "
                      "nn.Conv (the models' default).")
  parser.add_argument("--lax_row", default=True,
                      action=argparse.BooleanOptionalAction,
                      help="also time PGD-10 with flax's plain model.apply "
                      "(lax's input gradients) for the A/B.")
  parser.add_argument("--fori_repeats", type=int, default=1,
                      help="timed runs of the (slow) fori_loop PGD; 0: skip.")
  parser.add_argument("--sweep_chunk", type=int, default=0,
                      help="chunk_size of the eps sweep; 0: whole batch.")
  parser.add_argument("--sweep", default=True,
                      action=argparse.BooleanOptionalAction,
                      help="also time the eps sweep (--no-sweep: skip).")
  parser.add_argument("--max_load", type=float, default=0.5)
  parser.add_argument("--wait_idle_s", type=float, default=600)
  parser.add_argument("--output", default="", help="also write JSON here.")
  parser.add_argument("--smoke", action="store_true",
                      help="8x8 images, batch 8, 2-step PGD, one run each, "
                      "no torch: checks that the benchmark runs (tests).")
  parser.add_argument("--torch_worker", action="store_true",
                      help=argparse.SUPPRESS)
  parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.smoke:
    global IMAGE_SIZE, PGD_STEPS, SWEEP_EPS
    IMAGE_SIZE, PGD_STEPS = SMOKE_IMAGE_SIZE, SMOKE_PGD_STEPS
    SWEEP_EPS = SMOKE_SWEEP_EPS
    args.batch_size, args.chunk_sizes, args.repeats = 8, [4], 1
    args.fori_repeats, args.wait_idle_s, args.torch_python = 1, 0, ""
  if args.torch_worker:
    _torch_worker(args)
  else:
    _jax_main(args)


if __name__ == "__main__":
  sys.exit(main())
