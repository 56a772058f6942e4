r"""One command that says how robustjax runs on an accelerator.

  python benchmarks/accelerator_check.py --out=DIR
  python benchmarks/accelerator_check.py --out=DIR --dry_run   # CPU, tiny

Writes DIR/accelerator_check.json (every figure) and DIR/accelerator_check.md
(a short table). Synthetic data only (random images and labels; the study
section uses the embedded digits data), no network. Sections, each with its
own time budget (`--budget_scale` multiplies them; a section that runs out
records what it measured so far, marks itself `truncated` and the next one
starts; an error is recorded in the section and the next one starts):

* versions: Python, jax, jaxlib, flax, optax, orbax and any JAX plugin.
* devices: `jax.devices()`, platform, device kind, memory statistics.
* xla: `XLA_FLAGS`, the default backend, the loaded backends, and whether a
  fresh process with the project's XLA:CPU flags appended
  (`cpu_setup.CPU_XLA_FLAGS`) still starts this backend.
* archs: per architecture at the study shapes (ResNet-8 w16 on 16 px grey
  digits, ResNet-20 / ResNet-56 w16 on 32 px CIFAR, ResNet-18 / ResNet-50
  w64 at 224 px, the configs' batch sizes), the trainer's jitted train step
  (`steps.jit_step`) and the inference forward (`models.inference_fn`):
  compile seconds, img/s, FLOPs per call from the compiled program's
  `cost_analysis()`, TFLOP/s and MFU against the device's peak, in f32
  (matmul precision 'highest'), TF32 ('tensorfloat32') and bf16 (the
  models' `half_precision` option).
* members: `train_members`' program (the train step vmapped over K stacked
  models, `steps.jit_step(stacked=True)`) at K = 1, 3, 8, 16 against K
  sequential runs of the single-model step.
* corruptions: the 15 benchmark corruptions, all 5 severities in one
  program per corruption, at 32 px (CIFAR table) and 224 px (ImageNet
  table).
* pgd: PGD-10 (L-inf) img/s through `attacks.correct_under_attack`, for
  one model and for K = 4, 8 models attacked by one vmapped program (the
  study's K-model evaluation; img/s counts an image once per model).
* pipeline: host milliseconds per step of `pipeline.TrainBatches` on
  synthetic splits (with 224-of-256 random crops at 224 px) and of the
  host-to-device copy (`parallel.shard_batch`).
* study: `configs/default.py:runlocal` through `runner.run_study` into
  DIR/study (emptied first), with its `timing.jsonl` summarised (stopped
  by SIGINT, the study's own preemption path, when its budget runs out; a
  stopped study writes no timing line, the cells it saved are counted).

benchmarks/accelerator_results.md says what each figure means and holds
the measured runs.
"""

import argparse
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from configs import cifar10_resnet
from configs import common as configs_common
from configs import default as default_config
from configs import office31_resnet
from robustjax import cpu_setup
from robustjax import models
from robustjax import parallel
from robustjax import preemption
from robustjax.data import pipeline
from robustjax.data import registry as data_registry
from robustjax.models import batched
from robustjax.models import factory
from robustjax.robustness import attacks
from robustjax.robustness import corruptions
from robustjax.study import journal as journal_lib
from robustjax.study import grouped
from robustjax.study import runner
from robustjax.study import runtimes
from robustjax.train import optim
from robustjax.train import state as state_lib
from robustjax.train import steps as steps_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

# Dense peak throughput in FLOP/s by device kind and precision, vendor
# datasheet figures (NVIDIA H100 Tensor Core GPU datasheet, SXM5 column:
# FP32 67 TFLOP/s, TF32 and BF16 Tensor Core 989 / 1979 TFLOP/s with 2:4
# sparsity, half that dense; the H200 datasheet gives the H100 SXM's compute).
# The PCIe and NVL parts have lower clocks and are not in the table: an
# unknown kind gets no MFU.
PEAK_FLOPS = {
    "h100": {"f32": 67e12, "tf32": 494e12, "bf16": 989e12},
    "h200": {"f32": 67e12, "tf32": 494e12, "bf16": 989e12},
}
_NOT_IN_TABLE = ("pcie", "nvl")

PRECISIONS = ("f32", "tf32", "bf16")
# jax.default_matmul_precision per precision (bf16 computes in bfloat16,
# its matmuls at the default precision).
_MATMUL_PRECISION = {"f32": "highest", "tf32": "tensorfloat32", "bf16": None}

SECTIONS = ("versions", "devices", "xla", "archs", "members", "corruptions",
            "pgd", "pipeline", "study")
# Seconds per section on the accelerator (about 6 minutes in all, plus
# start-up); the dry run has its own, smaller ones.
BUDGETS = {"versions": 5, "devices": 5, "xla": 25, "archs": 125,
           "members": 45, "corruptions": 40, "pgd": 35, "pipeline": 15,
           "study": 85}
DRY_BUDGETS = {"versions": 5, "devices": 5, "xla": 20, "archs": 25,
               "members": 15, "corruptions": 10, "pgd": 8, "pipeline": 5,
               "study": 25}


def peak_flops(device_kind: str, precision: str):
  """The table's peak FLOP/s of `device_kind` at `precision`, or None."""
  kind = device_kind.lower()
  if any(s in kind for s in _NOT_IN_TABLE):
    return None
  for key, peaks in PEAK_FLOPS.items():
    if key in kind:
      return peaks.get(precision)
  return None


class Budget:
  """A section's time budget: `left()` seconds; `out()` once spent."""

  def __init__(self, seconds: float):
    self.seconds = float(seconds)
    self.start = time.perf_counter()
    self.truncated = False

  def left(self) -> float:
    return self.seconds - (time.perf_counter() - self.start)

  def out(self) -> bool:
    if self.left() <= 0:
      self.truncated = True
    return self.truncated


def flops_of(compiled):
  """FLOPs per call from a compiled program's cost analysis (None if none)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def compile_timed(jitted, *args):
  """(compiled, seconds to lower and compile)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def rate(call, images_per_call: int, seconds: float, min_calls: int,
         max_calls: int = 1 << 20):
  """img/s of `call()` (blocking each chunk), after one warm-up call.

  Chunks of calls double until `seconds` of timed calls (at least
  `min_calls`, at most `max_calls`) have run. Returns (img/s, calls).
  """
  jax.block_until_ready(call())
  calls, elapsed, chunk = 0, 0.0, max(1, min_calls)
  while True:
    chunk = min(chunk, max_calls - calls)
    start = time.perf_counter()
    out = None
    for _ in range(chunk):
      out = call()
    jax.block_until_ready(out)
    elapsed += time.perf_counter() - start
    calls += chunk
    if calls >= max_calls or (calls >= min_calls and elapsed >= seconds):
      return images_per_call * calls / elapsed, calls
    chunk *= 2


def _round(x, digits=3):
  return None if x is None else round(float(x), digits)


class Check:
  """Runs the sections and holds their results."""

  def __init__(self, out: str, dry_run: bool, budget_scale: float):
    self.out = out
    self.dry = dry_run
    self.scale = budget_scale
    self.results = {}
    self.device = jax.devices()[0]
    self.kind = getattr(self.device, "device_kind", self.device.platform)
    # Seconds of timed calls per measurement.
    self.measure_s = 0.0 if dry_run else 1.5

  # ------------------------------------------------------------------ shapes

  def arch_cases(self):
    """(label, config, arch) per architecture at the study shapes."""
    digits = configs_common.digits_config("resnet8", 16)
    cifar = cifar10_resnet.get_config()
    office = office31_resnet.get_config()
    if self.dry:
      small = configs_common.digits_config("resnet8", 4)
      small.dataset.image_size = 16
      small.batch_size = 4
      small.evals.batch_size = 4
      return [("resnet8 w4 16px grey", small, "resnet8:4")]
    return [("resnet8 w16 16px grey", digits, "resnet8:16"),
            ("resnet20 w16 32px", cifar, "resnet20:16"),
            ("resnet56 w16 32px", cifar, "resnet56:16"),
            ("resnet18 w64 224px", office, "resnet18:64"),
            ("resnet50 w64 224px", office, "resnet50:64")]

  def _model(self, config, arch, half=False):
    config = config.copy_and_resolve_references()
    config.model.half_precision = bool(half)
    return config, factory.build_model(config, arch)

  def _batch(self, config, n, seed=0, float_images=False):
    shape = factory.input_shape(config)[1:]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + shape, np.uint8)
    labels = rng.integers(0, 10, (n,), np.int32)
    if float_images:
      images = images.astype(np.float32) / 255.0
    return images, labels

  def _state(self, model, config, seed, tx):
    variables = factory.init_variables(model, config, jax.random.key(seed))
    return state_lib.create(variables["params"],
                            variables.get("batch_stats", {}), tx,
                            jax.random.PRNGKey(seed))

  def _step(self, model, config, mesh, tx, stacked=False, batch_axis=None):
    loss_fn = lambda lg, lb, x, a: steps_lib.cross_entropy(lg, lb)
    return steps_lib.jit_step(model, loss_fn, tx, mesh,
                              crop_padding=config.dataset.crop_padding,
                              flip=bool(config.dataset.flip),
                              stacked=stacked, batch_axis=batch_axis)

  def _train_runner(self, model, config, mesh, batch, k=0):
    """(compiled step, call(), compile s): k = 0 one model, else K stacked."""
    tx = optim.make(config.optimizer, 10_000)
    if k:
      state = batched.stack([self._state(model, config, s, tx)
                             for s in range(k)])
      parts = [self._batch(config, batch, seed=s) for s in range(k)]
      images = np.stack([p[0] for p in parts], 1)
      labels = np.stack([p[1] for p in parts], 1)
      step = self._step(model, config, mesh, tx, stacked=True, batch_axis=1)
    else:
      state = self._state(model, config, 0, tx)
      images, labels = self._batch(config, batch)
      step = self._step(model, config, mesh, tx)
    state = parallel.replicate(mesh, state)
    x, y = parallel.shard_batch(mesh, images, labels)
    # The stacked step takes the training length as an argument, as
    # `train_members` passes it.
    extra = (None,) + ((parallel.replicate(mesh, jnp.int32(10_000)),)
                       if k else ())
    compiled, compile_s = compile_timed(step, state, x, y, *extra)
    box = [state]

    def call():
      box[0], metrics = compiled(box[0], x, y, *extra)
      return metrics
    return compiled, call, compile_s

  # ---------------------------------------------------------------- sections

  def versions(self, budget):
    del budget
    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
                 "ml-collections", "numpy"):
      try:
        out[name] = importlib.metadata.version(name)
      except importlib.metadata.PackageNotFoundError:
        out[name] = None
    plugins = {}
    for dist in importlib.metadata.distributions():
      name = (dist.metadata["Name"] or "").lower().replace("_", "-")
      if name.startswith(("jax-cuda", "jax-rocm", "libtpu", "jax-tpu")):
        plugins[name] = dist.version
    out["plugins"] = plugins
    return out

  def devices(self, budget):
    del budget
    rows = []
    for d in jax.devices():
      row = {"id": d.id, "platform": d.platform,
             "device_kind": getattr(d, "device_kind", "")}
      try:
        stats = d.memory_stats()
      except Exception:  # pylint: disable=broad-except
        stats = None
      if stats:
        row["memory_stats"] = {k: int(v) for k, v in stats.items()
                               if k in ("bytes_limit", "bytes_in_use",
                                        "peak_bytes_in_use",
                                        "largest_alloc_size")}
      rows.append(row)
    return {"count": len(rows), "platform": self.device.platform,
            "device_kind": self.kind, "devices": rows,
            "peak_flops": {p: peak_flops(self.kind, p) for p in PRECISIONS}}

  def xla(self, budget):
    out = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
           "default_backend": jax.default_backend(),
           "platform_version": getattr(self.device.client, "platform_version",
                                       None)}
    try:
      from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
      out["backends"] = sorted(xla_bridge.backends())
    except Exception as e:  # pylint: disable=broad-except
      out["backends"] = f"unknown ({type(e).__name__})"
    # A fresh process with the project's XLA:CPU flags appended, as
    # `cpu_setup.configure_host_devices` appends them: does it still start?
    flags = " ".join([os.environ.get("XLA_FLAGS", ""),
                      *cpu_setup.CPU_XLA_FLAGS]).strip()
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=REPO)
    probe = ("import jax; jax.numpy.ones(2).block_until_ready(); "
             "print(jax.default_backend())")
    try:
      proc = subprocess.run([sys.executable, "-c", probe], env=env,
                            capture_output=True, text=True,
                            timeout=max(5.0, budget.left()))
      out["with_cpu_flags"] = {
          "XLA_FLAGS": flags, "returncode": proc.returncode,
          "backend": proc.stdout.strip().splitlines()[-1]
                     if proc.stdout.strip() else None,
          "stderr_tail": proc.stderr[-500:] if proc.returncode else ""}
    except subprocess.TimeoutExpired:
      budget.truncated = True
      out["with_cpu_flags"] = {"XLA_FLAGS": flags, "returncode": None}
    return out

  def archs(self, budget):
    cases = self.arch_cases()
    rows = []
    mesh = parallel.train_mesh()
    # The dry run skips TF32 (the CPU ignores the matmul precision).
    precisions = ("f32", "bf16") if self.dry else PRECISIONS
    for label, config, arch in cases:
      for precision in precisions:
        if budget.out():
          return {"rows": rows}
        rows.append(self._arch_row(label, config, arch, precision, mesh))
    return {"rows": rows}

  def _arch_row(self, label, config, arch, precision, mesh):
    config, model = self._model(config, arch, half=precision == "bf16")
    batch = config.batch_size
    eval_batch = config.evals.batch_size if self.dry else max(
        config.batch_size, min(config.eval_batch_size, 500))
    matmul = _MATMUL_PRECISION[precision]
    ctx = (jax.default_matmul_precision(matmul) if matmul
           else contextlib.nullcontext())
    peak = peak_flops(self.kind, precision)
    row = {"arch": label, "precision": precision, "batch": batch,
           "eval_batch": eval_batch}
    min_calls = 1 if self.dry else 3
    with ctx:
      compiled, call, compile_s = self._train_runner(model, config, mesh,
                                                     batch)
      img_s, calls = rate(call, batch, self.measure_s, min_calls)
      row["train"] = self._figures(compiled, compile_s, img_s, calls, batch,
                                   peak)
      variables = factory.init_variables(model, config, jax.random.key(0))
      variables = {k: v for k, v in variables.items()
                   if k in ("params", "batch_stats")}
      forward = jax.jit(models.inference_fn(model))
      images, _ = self._batch(config, eval_batch, float_images=True)
      x = jax.device_put(images)
      compiled, compile_s = compile_timed(forward, variables, x)
      img_s, calls = rate(lambda: compiled(variables, x), eval_batch,
                          self.measure_s, min_calls)
      row["eval"] = self._figures(compiled, compile_s, img_s, calls,
                                  eval_batch, peak)
    return row

  def _figures(self, compiled, compile_s, img_s, calls, batch, peak):
    flops = flops_of(compiled)
    out = {"compile_s": _round(compile_s), "img_s": _round(img_s, 1),
           "calls": calls, "gflop_per_call": _round(
               flops / 1e9 if flops else None)}
    if flops:
      achieved = flops * img_s / batch
      out["tflop_s"] = _round(achieved / 1e12, 4)
      out["mfu"] = _round(achieved / peak, 4) if peak else None
    return out

  def members(self, budget):
    ks = (2,) if self.dry else (1, 3, 8, 16)
    if self.dry:
      cases = [("resnet8 w4 16px grey", self.arch_cases()[0][1],
                "resnet8:4")]
    else:
      cases = [("resnet8 w16 16px grey",
                configs_common.digits_config("resnet8", 16), "resnet8:16"),
               ("resnet20 w16 32px", cifar10_resnet.get_config(),
                "resnet20:16")]
    mesh = parallel.train_mesh()
    rows, sequential = [], {}
    min_calls = 1 if self.dry else 3
    for label, config, arch in cases:
      if budget.out():
        break
      config, model = self._model(config, arch)
      batch = config.batch_size
      _, call, compile_s = self._train_runner(model, config, mesh, batch)
      single, _ = rate(call, batch, self.measure_s, min_calls)
      sequential[label] = {"batch": batch, "img_s": _round(single, 1),
                           "compile_s": _round(compile_s)}
      for k in ks:
        if budget.out():
          break
        _, call, compile_k = self._train_runner(model, config, mesh, batch,
                                                k=k)
        img_s, calls = rate(call, batch * k, self.measure_s, min_calls)
        rows.append({
            "arch": label, "batch": batch, "k": k,
            "compile_s": _round(compile_k), "calls": calls,
            "stacked_img_s": _round(img_s, 1),
            "stacked_img_s_per_model": _round(img_s / k, 1),
            # K sequential runs: one model at a time at the single rate.
            "sequential_img_s": _round(single, 1),
            "sequential_img_s_per_model": _round(single / k, 1),
            "sequential_compile_s": _round(compile_s),
            "speedup": _round(img_s / single, 3)})
    return {"rows": rows, "single_model": sequential}

  def corruptions(self, budget):
    if self.dry:
      cases = [("cifar", 16, 3, 4, corruptions.BENCHMARK[:1]),
               ("imagenet", 16, 3, 4, corruptions.BENCHMARK[:1])]
    else:
      cases = [("cifar", 32, 3, 256, corruptions.BENCHMARK),
               ("imagenet", 224, 3, 32, corruptions.BENCHMARK)]
    rows = []
    severities = jnp.arange(1, corruptions.NUM_SEVERITIES + 1)
    for t, (table, size, channels, batch, names) in enumerate(cases):
      # Each size gets its share of the budget, so 224 px is measured too.
      reserve = budget.seconds * (len(cases) - t - 1) / len(cases)
      rng = np.random.default_rng(0)
      x = jax.device_put(rng.random((batch, size, size, channels),
                                    np.float32))
      key = jax.random.key(0)
      for name in names:
        if budget.out():
          break
        if budget.left() < reserve:
          budget.truncated = True
          rows.append({"table": table, "skipped_from": name})
          break
        c = corruptions.get_corruption(name, table)
        fn = jax.jit(lambda x, key, c=c: jax.vmap(
            lambda s: c.apply(x, s, key))(severities))
        compiled, compile_s = compile_timed(fn, x, key)
        img_s, calls = rate(lambda: compiled(x, key), batch * len(severities),
                            self.measure_s / 3, 1 if self.dry else 2)
        rows.append({"table": table, "size": size, "batch": batch,
                     "corruption": name, "compile_s": _round(compile_s),
                     "calls": calls, "img_s": _round(img_s, 1)})
    out = {"rows": rows}
    for table in ("cifar", "imagenet"):
      done = [r for r in rows if r.get("table") == table and "img_s" in r]
      if done:  # Images through every measured corruption, one after another.
        out[f"{table}_all_img_s"] = _round(
            1.0 / sum(1.0 / r["img_s"] for r in done), 1)
        out[f"{table}_corruptions"] = len(done)
    return out

  def pgd(self, budget):
    if self.dry:
      cases = [("resnet8 w4 16px grey", self.arch_cases()[0][1], "resnet8:4",
                4)]
    else:
      cases = [("resnet8 w16 16px grey",
                configs_common.digits_config("resnet8", 16), "resnet8:16",
                500),
               ("resnet20 w16 32px", cifar10_resnet.get_config(),
                "resnet20:16", 500)]
    steps = 2 if self.dry else 10
    attack = attacks.get_attack("pgd_linf", steps=steps)
    rows = []
    for label, config, arch, batch in cases:
      if budget.out():
        break
      config, model = self._model(config, arch)
      apply_fn = models.inference_fn(model)
      variables = factory.init_variables(model, config, jax.random.key(0))
      variables = {k: v for k, v in variables.items()
                   if k in ("params", "batch_stats")}
      images, labels = self._batch(config, batch, float_images=True)
      x, y = jax.device_put(images), jax.device_put(labels)
      keys = attacks.indexed_keys(jax.random.key(0), batch)
      eps = jnp.asarray([8.0 / 255.0], jnp.float32)
      fn = jax.jit(functools.partial(attacks.correct_under_attack, apply_fn,
                                     attack))
      compiled, compile_s = compile_timed(fn, variables, x, y, keys, eps)
      img_s, calls = rate(lambda: compiled(variables, x, y, keys, eps), batch,
                          self.measure_s, 1 if self.dry else 2)
      flops = flops_of(compiled)
      rows.append({"arch": label, "batch": batch, "steps": steps,
                   "models": 1, "compile_s": _round(compile_s),
                   "calls": calls, "img_s": _round(img_s, 1),
                   "tflop_s": _round(flops * img_s / batch / 1e12, 4)
                              if flops else None})
      single = img_s
      # K models attacked by one program vmapped over their stacked
      # variables (the study's K-model evaluation, `Cell.run_many`):
      # img/s counts one image per model.
      for k in (2,) if self.dry else (4, 8):
        if budget.out():
          break
        stacked = jax.tree.map(lambda x: jnp.stack([x] * k), variables)
        fn_k = jax.jit(lambda vs, *a: jax.vmap(
            lambda v: attacks.correct_under_attack(apply_fn, attack, v, *a))(
                vs))
        compiled, compile_s = compile_timed(fn_k, stacked, x, y, keys, eps)
        img_s, calls = rate(lambda: compiled(stacked, x, y, keys, eps),
                            k * batch, self.measure_s, 1 if self.dry else 2)
        rows.append({"arch": label, "batch": batch, "steps": steps,
                     "models": k, "compile_s": _round(compile_s),
                     "calls": calls, "img_s": _round(img_s, 1),
                     "speedup": _round(img_s / single, 3)})
    return {"rows": rows}

  def pipeline(self, budget):
    if self.dry:
      cases = [("16px grey", 64, 16, 16, 1, 8)]
    else:
      cases = [("16px grey (digits)", 5000, 16, 16, 1, 64),
               ("32px (CIFAR)", 10000, 32, 32, 3, 128),
               ("224px of 256 (Office-31)", 512, 224, 256, 3, 32)]
    mesh = parallel.train_mesh()
    rows = []
    for label, n, size, stored, channels, batch in cases:
      if budget.out():
        break
      rng = np.random.default_rng(0)
      full = rng.integers(0, 256, (n, stored, stored, channels), np.uint8)
      split = data_registry.Split(
          images=full[:, :size, :size] if stored > size else full,
          labels=rng.integers(0, 10, (n,), np.int32), name=label,
          uncropped=full if stored > size else None)
      batches = pipeline.TrainBatches(split, batch, seed=0)
      steps = 2 if self.dry else 50
      host, copy = [], []
      for step in range(steps):
        if budget.out():
          break
        start = time.perf_counter()
        images, labels = batches.batch(step)
        host.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(parallel.shard_batch(mesh, images, labels))
        copy.append(time.perf_counter() - start)
      if host:
        rows.append({"data": label, "batch": batch, "steps": len(host),
                     "host_ms_per_step": _round(1e3 * np.median(host), 3),
                     "copy_ms_per_step": _round(1e3 * np.median(copy), 3),
                     "host_img_s": _round(batch / np.median(host), 1)})
    return {"rows": rows}

  def study(self, budget):
    config = default_config.get_config("runlocal")
    if self.dry:  # One tiny model, one corruption, FGSM.
      config.study.archs = ("resnet8:4",)
      config.study.prune.sparsities = ()
      config.study.quantize.weight_bits = ()
      config.study.seeds = 1
      config.study.distill.teacher = ""
      config.study.distill.students = ()
      config.study.negative_control = ""
      config.num_train_steps = 2
      config.batch_size = 16
      config.dataset.max_train_examples = 64
      config.dataset.max_eval_examples = 32
      config.compress.finetune_epochs = 0.25
      config.evals.corruptions.names = ("contrast",)
      config.evals.corruptions.max_examples = 16
      config.evals.attacks.names = ("fgsm",)
      config.evals.attacks.max_examples = 16
    workdir = os.path.join(self.out, "study")
    # A fresh study each time: a study left here by an earlier check would
    # resume and time only what it lacked.
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    stopped = threading.Event()

    def stop():
      stopped.set()
      os.kill(os.getpid(), signal.SIGINT)  # The study's preemption path.
    timer = threading.Timer(max(1.0, budget.left()), stop)
    timer.start()
    rows, error = None, None
    try:
      rows = runner.run_study(config, workdir)
    except preemption.Preempted as e:
      error = str(e)
    except KeyboardInterrupt:  # The signal arrived outside the guard.
      error = "stopped by the time budget"
    finally:
      timer.cancel()
    wall = time.perf_counter() - start
    budget.truncated = stopped.is_set()
    out = {"workdir": workdir, "wall_s": _round(wall),
           "rows": len(rows) if rows is not None else None,
           # study.grouped=auto: vmapped groups on GPU/TPU, one by one on CPU.
           "grouped": grouped.enabled(config)}
    if error:
      out["stopped"] = error
    # Cells finished (a stopped study writes no timing.jsonl line).
    out["cells_saved"] = len(journal_lib.Journal(
        os.path.join(workdir, runner.JOURNAL)))
    path = os.path.join(workdir, runtimes.TIMING)
    if os.path.exists(path):
      with open(path) as f:
        segments = [json.loads(l) for l in f if l.strip()]
      out["timing_segments"] = len(segments)
      out["timing_wall_s"] = _round(sum(s["total"]["wall_s"]
                                        for s in segments))
      out["timing_compile_s"] = _round(sum(s["total"]["compile_s"]
                                           for s in segments))
      stages = {}
      for s in segments:
        for name, v in s.get("stages", {}).items():
          stages.setdefault(name, [0.0, 0.0])
          stages[name][0] += v["wall_s"]
          stages[name][1] += v["compile_s"]
      out["stages"] = {k: {"wall_s": _round(w), "compile_s": _round(c)}
                       for k, (w, c) in stages.items()}
    return out

  # -------------------------------------------------------------------- run

  def run(self, sections):
    budgets = DRY_BUDGETS if self.dry else BUDGETS
    for name in sections:
      budget = Budget(budgets[name] * self.scale)
      start = time.perf_counter()
      try:
        result = getattr(self, name)(budget)
      except Exception as e:  # pylint: disable=broad-except
        result = {"error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-2000:]}
      result["seconds"] = _round(time.perf_counter() - start, 2)
      result["budget_s"] = budget.seconds
      result["truncated"] = budget.truncated
      self.results[name] = result
      print(f"{name}: {result['seconds']} s"
            f"{' (truncated)' if budget.truncated else ''}"
            f"{' ERROR ' + result['error'] if 'error' in result else ''}",
            flush=True)
      self.write()

  def write(self):
    os.makedirs(self.out, exist_ok=True)
    doc = {"dry_run": self.dry, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
           "sections": self.results}
    with open(os.path.join(self.out, "accelerator_check.json"), "w") as f:
      json.dump(doc, f, indent=1, default=str)
    with open(os.path.join(self.out, "accelerator_check.md"), "w") as f:
      f.write(markdown(doc))


def _fmt(x, spec=".1f"):
  return "-" if x is None else format(x, spec)


def markdown(doc) -> str:
  """The short table of a check's JSON document."""
  s = doc["sections"]
  lines = [f"# Accelerator check{' (dry run)' if doc['dry_run'] else ''}", ""]
  dev = s.get("devices", {})
  ver = s.get("versions", {})
  xla = s.get("xla", {})
  lines.append(f"{dev.get('count', '?')} x {dev.get('device_kind', '?')} "
               f"({dev.get('platform', '?')}); jax {ver.get('jax')}, "
               f"jaxlib {ver.get('jaxlib')}, flax {ver.get('flax')}, "
               f"Python {ver.get('python')}; plugins "
               f"{ver.get('plugins') or 'none'}; XLA_FLAGS "
               f"`{xla.get('XLA_FLAGS', '')}`; project CPU flags start the "
               f"backend: "
               f"{(xla.get('with_cpu_flags') or {}).get('returncode') == 0}.")
  lines += ["", "| section | seconds | budget | truncated | error |",
            "|---|---|---|---|---|"]
  for name, r in s.items():
    lines.append(f"| {name} | {r.get('seconds')} | {r.get('budget_s')} | "
                 f"{r.get('truncated')} | {r.get('error', '')[:80]} |")
  rows = s.get("archs", {}).get("rows", [])
  if rows:
    lines += ["", "| architecture | precision | train compile s | train img/s"
              " | train MFU | eval compile s | eval img/s | eval MFU |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
      t, e = r["train"], r["eval"]
      lines.append(
          f"| {r['arch']} b{r['batch']} | {r['precision']} | "
          f"{_fmt(t['compile_s'])} | {_fmt(t['img_s'], '.0f')} | "
          f"{_fmt(t.get('mfu'), '.1%')} | {_fmt(e['compile_s'])} | "
          f"{_fmt(e['img_s'], '.0f')} | {_fmt(e.get('mfu'), '.1%')} |")
  rows = s.get("members", {}).get("rows", [])
  if rows:
    lines += ["", "| members | K | stacked img/s per model | sequential img/s"
              " per model | speedup |", "|---|---|---|---|---|"]
    for r in rows:
      lines.append(f"| {r['arch']} b{r['batch']} | {r['k']} | "
                   f"{_fmt(r['stacked_img_s_per_model'], '.0f')} | "
                   f"{_fmt(r['sequential_img_s_per_model'], '.0f')} | "
                   f"{_fmt(r['speedup'], '.2f')}x |")
  c = s.get("corruptions", {})
  p = s.get("pgd", {}).get("rows", [])
  pipe = s.get("pipeline", {}).get("rows", [])
  st = s.get("study", {})
  lines += ["", "| other | figure |", "|---|---|"]
  for table in ("cifar", "imagenet"):
    if f"{table}_all_img_s" in c:
      lines.append(f"| {c[table + '_corruptions']} corruptions x 5 "
                   f"severities, {table} table | "
                   f"{_fmt(c[table + '_all_img_s'])} img/s |")
  for r in p:
    k = r.get("models", 1)
    lines.append(f"| PGD-{r['steps']}, {r['arch']} b{r['batch']}"
                 + (f", {k} models in one program" if k > 1 else "") +
                 f" | {_fmt(r['img_s'])} img/s"
                 + (f" ({_fmt(r['speedup'], '.2f')}x one model)" if k > 1
                    else "") + " |")
  for r in pipe:
    lines.append(f"| input pipeline, {r['data']} b{r['batch']} | "
                 f"{_fmt(r['host_ms_per_step'], '.3f')} ms host + "
                 f"{_fmt(r['copy_ms_per_step'], '.3f')} ms copy per step |")
  if st and "wall_s" in st:
    lines.append(f"| study (default runlocal, "
                 f"{'grouped' if st.get('grouped') else 'sequential'}) | "
                 f"{_fmt(st['wall_s'])} s wall, "
                 f"{_fmt(st.get('timing_compile_s'))} s compile (timing.jsonl)"
                 f", {st.get('cells_saved')} cells"
                 f"{', stopped by its budget' if st.get('stopped') else ''} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="Output folder.")
  parser.add_argument("--dry_run", action="store_true",
                      help="Every section on tiny sizes (the CPU test).")
  parser.add_argument("--budget_scale", type=float, default=1.0,
                      help="Multiplies every section's time budget.")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help="Comma-separated sections to run.")
  args = parser.parse_args(argv)
  sections = [s for s in args.sections.split(",") if s]
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    parser.error(f"unknown sections {sorted(unknown)}; valid: {SECTIONS}")
  check = Check(args.out, args.dry_run, args.budget_scale)
  check.run(sections)
  print(markdown({"dry_run": args.dry_run, "sections": check.results}))


if __name__ == "__main__":
  main()
