"""Probes of the CPU training step's parts (train_results.md, 2026-12-02).

  PYTHONPATH=. python benchmarks/train_probes.py chunks   # kernel grad over g batch chunks
  PYTHONPATH=. python benchmarks/train_probes.py taps     # kernel grad: lax vs per-tap GEMMs
  PYTHONPATH=. python benchmarks/train_probes.py bn [--torch_python=...]  # BatchNorm+ReLU
  PYTHONPATH=. python benchmarks/train_probes.py hlo      # transposes in the compiled step
  PYTHONPATH=. python benchmarks/train_probes.py trace    # profiler thunk times of the step
  PYTHONPATH=. python benchmarks/train_probes.py s2d      # 3x3 conv: lax vs space-to-depth
  PYTHONPATH=. python benchmarks/train_probes.py evalbatch  # eval: batch size, bf16
  PYTHONPATH=. python benchmarks/train_probes.py layout   # conv: NHWC vs NCHW data

Each runs in a process set up as the launchers set it up
(`cpu_setup.configure_host_devices()`), programs on the first device, as
training. Timings are medians of wall ms per call (and CPU ms where
printed) over alternating rounds; `--smoke` shrinks every shape (tests).
`hlo` compiles the trainer's ResNet-20 step (32x32x3, batch 128, as
train_benchmark.py) and classifies the fusions of its entry computation by
the ops they contain: whether the layout transposes carry BatchNorm
(`rsqrt`) or ReLU (`maximum` / `select`) work. `evalbatch` times the
study's evaluation path (`evaluators.base.clean_correct`: batches sharded
over every device) at the default study's shape for several batch sizes,
float32 and bfloat16 (computation dtype; float32 parameters), and says how
far bfloat16's logits are from float32's.
"""

import argparse
import collections
import itertools
import json
import math
import os
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BN_SHAPES = ((128, 32, 16), (128, 16, 32), (128, 8, 64), (64, 16, 16))


def _cpu():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _time(fns, args, rounds, reps=3):
  """{name: (median wall ms, median CPU ms)}, rounds alternating order."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  for fn in fns.values():
    jax.block_until_ready(fn(*args))
  res = {name: [] for name in fns}
  for r in range(rounds):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      cpu, start = _cpu(), time.perf_counter()
      for _ in range(reps):
        out = fns[name](*args)
      jax.block_until_ready(out)
      res[name].append(((time.perf_counter() - start) / reps * 1e3,
                        (_cpu() - cpu) / reps * 1e3))
  return {name: (float(np.median([w for w, _ in v])),
                 float(np.median([c for _, c in v]))) for name, v in res.items()}


def _conv_inputs(n, s, ci, co, k, stride):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  pad = ((k // 2, k // 2),) * 2

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  dev = jax.devices()[0]
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.standard_normal((n, s, s, ci), np.float32), dev)
  w = jax.device_put(rng.standard_normal((k, k, ci, co), np.float32), dev)
  dy = jax.device_put(rng.standard_normal(
      jax.eval_shape(conv, x, w).shape, np.float32), dev)
  return conv, pad, (x, w, dy)


def _kernel_grad(conv):
  import jax  # pylint: disable=g-import-not-at-top
  return lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]


def chunks(args):
  """Kernel gradient as a sum over g batch chunks vs one convolution."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  shapes = ([(8, 8, 4, 4, 3, 1)] if args.smoke else
            [(128, 32, 16, 16, 3, 1), (128, 32, 3, 16, 3, 1),
             (128, 16, 32, 32, 3, 1), (128, 32, 16, 32, 3, 2),
             (128, 16, 32, 64, 3, 2), (64, 32, 16, 16, 3, 1)])
  groups = (1, 2, 4) if args.smoke else (1, 4, 8, 16, 32)
  for shape in shapes:
    conv, _, inputs = _conv_inputs(*shape)
    grad = _kernel_grad(conv)
    n = shape[0]

    def summed(x, w, dy, g):
      xs = x.reshape(g, n // g, *x.shape[1:])
      dys = dy.reshape(g, n // g, *dy.shape[1:])
      return sum(grad(xs[i], w, dys[i]) for i in range(g))

    fns = {f"g{g}": jax.jit(lambda x, w, dy, g=g: summed(x, w, dy, g))
           for g in groups}
    want = np.asarray(fns["g1"](*inputs))
    for fn in fns.values():  # Same gradient up to float summation order.
      np.testing.assert_allclose(np.asarray(fn(*inputs)), want, rtol=1e-3,
                                 atol=1e-2)
    times = _time(fns, inputs, args.rounds)
    print(shape, "  ".join(f"{g}: wall {w:.2f} cpu {c:.2f}"
                           for g, (w, c) in times.items()), flush=True)


def taps(args):
  """Kernel gradient: lax's convolution vs one GEMM per kernel tap."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from robustjax.models import conv as conv_lib  # pylint: disable=g-import-not-at-top
  shapes = ([(8, 8, 4, 4, 3, 1), (8, 8, 4, 8, 1, 2)] if args.smoke else
            [(128, 32, 16, 16, 3, 1), (128, 16, 32, 32, 3, 1),
             (128, 8, 64, 64, 3, 1), (128, 32, 16, 32, 1, 2),
             (128, 16, 32, 64, 1, 2), (64, 16, 16, 16, 3, 1),
             (64, 8, 32, 32, 3, 1), (64, 4, 64, 64, 3, 1),
             (64, 16, 16, 32, 1, 2), (64, 8, 32, 64, 1, 2)])
  for shape in shapes:
    conv, pad, inputs = _conv_inputs(*shape)
    stride = shape[-1]
    fns = {"lax": jax.jit(_kernel_grad(conv)),
           "taps": jax.jit(lambda x, w, dy, pad=pad, stride=stride:
                           conv_lib._kernel_grad_by_taps(  # pylint: disable=protected-access
                               x, dy, w.shape, (stride, stride), pad, None))}
    np.testing.assert_allclose(np.asarray(fns["taps"](*inputs)),
                               np.asarray(fns["lax"](*inputs)), rtol=1e-3,
                               atol=1e-2)
    times = _time(fns, inputs, args.rounds)
    print(shape, "  ".join(f"{g}: wall {w:.2f} cpu {c:.2f}"
                           for g, (w, c) in times.items()), flush=True)


def _space_to_depth_conv(x, w):
  """A 3x3 stride-1 'SAME' convolution as a 2x2 convolution over 2x2 blocks.

  The input, padded by one pixel, is rearranged into 2x2 blocks ([n, h/2 +
  1, w/2 + 1, 4c]); output block (i, j) (pixels 2i..2i+1, 2j..2j+1) reads
  padded blocks i..i+1, j..j+1, so a 2x2 'VALID' convolution with a
  [2, 2, 4c, 4o] block kernel (the 3x3 taps placed by offset, zeros
  elsewhere: 16/9 of the multiply-adds) gives every output block, which is
  rearranged back to [n, h, w, o]. The point: a 64-channel convolution
  instead of XLA:CPU's slow 16-channel one.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, h, wd, c = x.shape
  o = w.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  hb, wb = h // 2 + 1, wd // 2 + 1
  blocks = xp.reshape(n, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5)
  blocks = blocks.reshape(n, hb, wb, 4 * c)
  kernel = jnp.zeros((2, 2, 2, 2, c, 2, 2, o), w.dtype)  # bi bj dy dx c a b o
  for bi, bj, dy, dx, a, b in itertools.product(range(2), repeat=6):
    u, v = 2 * bi + dy - a, 2 * bj + dx - b  # The 3x3 tap, if any.
    if 0 <= u <= 2 and 0 <= v <= 2:
      kernel = kernel.at[bi, bj, dy, dx, :, a, b, :].set(w[u, v])
  kernel = kernel.reshape(2, 2, 4 * c, 4 * o)
  out = jax.lax.conv_general_dilated(
      blocks, kernel, (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out = out.reshape(n, h // 2, wd // 2, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
  return out.reshape(n, h, wd, o)


def s2d(args):
  """3x3 stride-1 convolutions, forward and input gradient: lax vs the
  space-to-depth form (`_space_to_depth_conv`, layout changes included)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  shapes = ([(4, 8, 4, 4, 3, 1)] if args.smoke else
            [(128, 32, 16, 16, 3, 1), (128, 16, 32, 32, 3, 1),
             (100, 16, 16, 16, 3, 1)])
  for shape in shapes:
    conv, _, inputs = _conv_inputs(*shape)
    forms = {"lax": conv, "s2d": _space_to_depth_conv}
    fns = {}
    for name, f in forms.items():
      fns[f"{name} fwd"] = jax.jit(lambda x, w, dy, f=f: f(x, w))
      fns[f"{name} dx"] = jax.jit(
          lambda x, w, dy, f=f: jax.vjp(lambda x: f(x, w), x)[1](dy)[0])
    for part in ("fwd", "dx"):
      np.testing.assert_allclose(np.asarray(fns[f"s2d {part}"](*inputs)),
                                 np.asarray(fns[f"lax {part}"](*inputs)),
                                 rtol=1e-4, atol=1e-3)
    times = _time(fns, inputs, args.rounds)
    print(shape, "  ".join(f"{g}: wall {w:.2f} cpu {c:.2f}"
                           for g, (w, c) in times.items()), flush=True)


def evalbatch(args):
  """Evaluation img/s by batch size and dtype (ResNet-8, 16x16x1 digits)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from robustjax import models  # pylint: disable=g-import-not-at-top
  from robustjax import parallel  # pylint: disable=g-import-not-at-top
  from robustjax.models import factory  # pylint: disable=g-import-not-at-top
  from robustjax.robustness.evaluators import base  # pylint: disable=g-import-not-at-top
  n, batches = (64, (16, 32)) if args.smoke else (6000, (250, 500, 1000, 2000))
  rng = np.random.default_rng(0)
  x = rng.random((n, 16, 16, 1), dtype=np.float32)
  y = rng.integers(0, 10, n).astype(np.int32)
  mesh = parallel.make_mesh()
  print(f"devices: {jax.device_count()}, {n} images", flush=True)
  for width in ((4,) if args.smoke else (8, 16)):
    spec = dict(name="resnet8", width=width, num_classes=10, dataset="digits")
    fns, logits = {}, {}
    for dt, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
      module = factory.build_from_spec(spec, dtype=dtype)
      v = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
      fn = models.inference_fn(module)
      logits[dt] = np.asarray(jax.jit(fn)(v, x[:256]), np.float32)
      checked = len(logits[dt])
      for bs in batches:
        fns[f"{dt} batch {bs}"] = (
            lambda fn=fn, v=v, bs=bs: base.clean_correct(fn, v, x, y, bs,
                                                         mesh))
    times = _time(fns, (), args.rounds, reps=1)
    for name, (wall, cpu) in times.items():
      print(f"resnet8:{width} {name}: {n / wall * 1e3:.0f} img/s, wall "
            f"{wall:.1f} ms cpu {cpu:.1f} ms", flush=True)
    err = np.abs(logits["bf16"] - logits["f32"]).max()
    agree = (logits["bf16"].argmax(-1) == logits["f32"].argmax(-1)).mean()
    print(f"resnet8:{width} bf16 vs f32 logits (random init, {checked} "
          "images): "
          f"max |diff| {err:.3g} of max |logit| "
          f"{np.abs(logits['f32']).max():.3g}; argmax agreement "
          f"{100 * agree:.1f} %", flush=True)


def layout(args):
  """Convolutions (forward, input and kernel gradients) on NHWC data vs the
  same data stored NCHW (kernels HWIO vs OIHW), for ResNet-20's shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  shapes = ([(4, 8, 4, 4, 3, 1)] if args.smoke else
            [(128, 32, 16, 16, 3, 1), (128, 16, 32, 32, 3, 1),
             (128, 8, 64, 64, 3, 1), (128, 32, 16, 32, 3, 2)])
  for shape in shapes:
    _, pad, (x, w, dy) = _conv_inputs(*shape)
    stride = (shape[-1],) * 2

    def make(dims, stride=stride, pad=pad):
      conv = lambda x, w: jax.lax.conv_general_dilated(
          x, w, stride, pad, dimension_numbers=dims)
      return {
          "fwd": jax.jit(lambda x, w, dy: conv(x, w)),
          "dx": jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w),
                                                 x)[1](dy)[0]),
          "dw": jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w),
                                                 w)[1](dy)[0])}
    nhwc = make(("NHWC", "HWIO", "NHWC"))
    nchw = make(("NCHW", "OIHW", "NCHW"))
    to_nchw = (x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1),
               dy.transpose(0, 3, 1, 2))
    back = {"fwd": (0, 2, 3, 1), "dx": (0, 2, 3, 1), "dw": (2, 3, 1, 0)}
    for part, order in back.items():  # The same numbers in both layouts.
      np.testing.assert_allclose(
          np.asarray(nchw[part](*to_nchw)).transpose(order),
          np.asarray(nhwc[part](x, w, dy)), rtol=1e-3, atol=1e-2)
    out = []
    for part in back:
      t = _time({"NHWC": lambda a, b, c, f=nhwc[part]: f(x, w, dy),
                 "NCHW": lambda a, b, c, f=nchw[part]: f(*to_nchw)},
                (None, None, None), args.rounds)
      out.append(f"{part}: NHWC {t['NHWC'][0]:.2f} NCHW {t['NCHW'][0]:.2f} "
                 "ms")
    print(shape, "  ".join(out), flush=True)


def _bn_shapes(smoke):
  return ((4, 8, 4),) if smoke else BN_SHAPES


def bn_ours(args):
  """flax BatchNorm (training) + ReLU: forward and forward + backward."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  out = {}
  for n, s, c in _bn_shapes(args.smoke):
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((n, s, s, c), np.float32), dev)
    dy = jax.device_put(rng.standard_normal((n, s, s, c), np.float32), dev)
    v = bn.init(jax.random.key(0), x)

    def f(p, x, bn=bn, stats=v["batch_stats"]):
      y, _ = bn.apply({"params": p, "batch_stats": stats}, x,
                      mutable=["batch_stats"])
      return jax.nn.relu(y)

    fns = {"fwd": jax.jit(lambda p, x, dy, f=f: f(p, x)),
           "fwd+bwd": jax.jit(lambda p, x, dy, f=f: jax.vjp(f, p, x)[1](dy))}
    times = _time(fns, (v["params"], x, dy), args.rounds)
    out[f"{n}x{s}x{s}x{c}"] = {k: w for k, (w, _) in times.items()}
  return out


def bn_torch(args):
  """PyTorch F.batch_norm (training) + F.relu, with autograd."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  out = {}
  for n, s, c in _bn_shapes(args.smoke):
    x = torch.randn(n, c, s, s, requires_grad=True)
    g, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    mean, var, dy = torch.zeros(c), torch.ones(c), torch.randn(n, c, s, s)

    def fwd():
      with torch.no_grad():
        F.relu(F.batch_norm(x, mean, var, g, b, True, 0.1, 1e-5))

    def fwd_bwd():
      F.relu(F.batch_norm(x, mean, var, g, b, True, 0.1, 1e-5)).backward(dy)
      x.grad = g.grad = b.grad = None

    res = {}
    for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
      fn()
      ts = []
      for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(3):
          fn()
        ts.append((time.perf_counter() - start) / 3 * 1e3)
      res[name] = sorted(ts)[len(ts) // 2]
    out[f"{n}x{s}x{s}x{c}"] = res
  return out


def bn(args):
  ours = bn_ours(args)
  theirs = {}
  if args.torch_python:
    cmd = [args.torch_python, os.path.abspath(__file__), "bn_torch",
           f"--rounds={args.rounds}"] + (["--smoke"] if args.smoke else [])
    theirs = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                       text=True).stdout.splitlines()[-1])
  for shape, times in ours.items():
    line = "  ".join(f"{k} ours {v:.2f}" + (
        f" PyTorch {theirs[shape][k]:.2f}" if theirs else "")
                     for k, v in times.items())
    print(shape, line, flush=True)


def _train_step(args):
  """The trainer's compiled ResNet-20 step as train_benchmark.py builds it
  (32x32x3, batch 128; `--smoke` 8x8x3, batch 8), its state and batch."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from robustjax import parallel  # pylint: disable=g-import-not-at-top
  import train_benchmark  # pylint: disable=g-import-not-at-top
  shape = (8, 3, 8) if args.smoke else (32, 3, 128)
  _, _, step, state, (x, y), _ = train_benchmark.train_step(
      *shape, nn.Conv, np.random.default_rng(0), parallel.train_mesh())
  return step.lower(state, x, y, None).compile(), state, x, y, shape


def hlo(args):
  """Fusions of the compiled ResNet-20 train step, by the ops they contain."""
  step, _, _, _, (size, channels, batch) = _train_step(args)
  text = step.as_text()
  comps, current = {}, None
  for line in text.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if m:
      current = m.group(1)
      comps[current] = []
    elif line.startswith("}"):
      current = None
    elif current:
      comps[current].append(line)
  entry = next(k for k in reversed(comps) if k.startswith("main"))
  kinds, shapes, written = collections.Counter(), collections.Counter(), 0
  for line in comps[entry]:
    m = re.search(r"= (\S+) fusion\(.*calls=%?([\w.\-]+)", line)
    if not m:
      continue
    ops = set(re.findall(r"= \S+ ([a-z][\w-]*)\(",
                         "\n".join(comps.get(m.group(2), []))))
    tags = tuple(t for t, present in (
        ("transpose", "transpose" in ops), ("rsqrt (BatchNorm)", "rsqrt" in ops),
        ("relu/select", bool(ops & {"maximum", "select"})),
        ("reduce", "reduce" in ops)) if present)
    kinds[tags] += 1
    if "transpose" in ops:
      shapes[m.group(1).split("{")[0]] += 1
      written += 4 * sum(math.prod(int(d) for d in dims.split(","))
                         for dims in re.findall(r"f32\[([\d,]+)\]",
                                                m.group(1)))
  print(f"train step {size}x{size}x{channels}, batch {batch}: "
        f"{sum(kinds.values())} fusions in the entry computation")
  for tags, count in kinds.most_common():
    print(f"{count:5d}  {' + '.join(tags) or '(none of these)'}")
  print(f"fusions with a transpose write {written / 1e6:.1f} MB per step; "
        f"their outputs: {shapes.most_common(12)}")


def trace(args):
  """A jax.profiler trace of 3 train steps: thunk time per kind and step."""
  import jax  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  step, state, x, y, _ = _train_step(args)
  for _ in range(3):
    state, metrics = step(state, x, y, None)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(5):
    state, metrics = step(state, x, y, None)
  jax.block_until_ready(metrics)
  print(f"step {(time.perf_counter() - start) / 5 * 1e3:.1f} ms")
  folder = tempfile.mkdtemp()
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    for _ in range(3):
      state, metrics = step(state, x, y, None)
    jax.block_until_ready(metrics)
  path = glob.glob(os.path.join(folder, "**", "*perfetto_trace.json.gz"),
                   recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      kind = re.sub(r"[._]?\d+$", "", e["name"])
      total[kind] += e["dur"]
      count[kind] += 1
  print("per step: ms, thunks, kind (XLA:CPU records a convolution's "
        "dispatch, not its Eigen work)")
  for kind, us in total.most_common(20):
    print(f"{us / 3e3:9.1f} {count[kind] // 3:5d}  {kind}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("probe", choices=("chunks", "taps", "bn", "bn_torch",
                                        "hlo", "trace", "s2d", "evalbatch",
                                        "layout"))
  parser.add_argument("--torch_python", default="",
                      help="bn: also time PyTorch in this venv's python.")
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes, 2 rounds: checks that it runs.")
  args = parser.parse_args()
  if args.smoke:
    args.rounds = 2
  if args.probe == "bn_torch":
    print(json.dumps(bn_torch(args)))
    return
  sys.path.insert(0, REPO)
  from robustjax import cpu_setup  # pylint: disable=g-import-not-at-top
  cpu_setup.configure_host_devices()
  globals()[args.probe](args)


if __name__ == "__main__":
  main()
