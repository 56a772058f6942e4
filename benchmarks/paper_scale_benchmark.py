r"""Costs of the paper-scale models, measured here, for BUILD.md's estimates.

For each paper-scale model (ImageNet-style ResNet-18/50 at 224 px on
Office-31's 31 classes; CIFAR ResNet-20/56 and ResNet-20 at 4x width on
CIFAR-10) this measures, with the suite's own train step and inference
function compiled by XLA:

* FLOPs per image (XLA's cost analysis) of a train step, an evaluation
  forward pass and one PGD step (the gradient of the loss w.r.t. the input);
* memory of one train step at the configs' batch size (XLA's buffer
  assignment: arguments + outputs + temporaries, state donated);
* CPU throughput here (train and eval images/s, a few steps) and, in the
  same run, XLA's float32 matmul rate (4096^2), so the fraction of the
  matmul rate the train step reaches is measured under the same load;
* the preparation steps: building Office-31 from JPEGs of the real sizes
  (amazon 300x300, dslr 1000x1000, webcam 640x480; generated, 40 per
  domain) and converting torchvision ResNet-18/50 weights (random values in
  the real layout).

  python benchmarks/paper_scale_benchmark.py [--quick]

Writes benchmarks/paper_scale_results.json; BUILD.md's "Paper-scale runs"
turns these into time estimates for one GPU / a v4-8 TPU.
"""

import json
import os
import sys
import tempfile
import time

import harness  # benchmarks/, the script's own folder.

sys.path.insert(0, harness.REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import optax

from PIL import Image
from safetensors import numpy as st_numpy

from configs import cifar10_resnet
from configs import office31_resnet
from robustjax import models
from robustjax import parallel
from robustjax.data import office31
from robustjax.data import registry
from robustjax.models import factory
from robustjax.models import pretrained
from robustjax.train import optim
from robustjax.train import state as state_lib
from robustjax.train import steps
from tests.models import pretrained_test

# Office-31's image sizes per domain (width, height).
OFFICE31_SIZES = {"amazon": (300, 300), "dslr": (1000, 1000),
                  "webcam": (640, 480)}

# (label, config, model, width, train batch, eval batch).
MODELS = (
    ("resnet18@224", office31_resnet, "resnet18", 64, 32, 64),
    ("resnet50@224", office31_resnet, "resnet50", 64, 32, 64),
    ("resnet20@32", cifar10_resnet, "resnet20", 16, 128, 256),
    ("resnet56@32", cifar10_resnet, "resnet56", 16, 128, 256),
    ("resnet20x4@32", cifar10_resnet, "resnet20", 64, 128, 256),
)


def _flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _memory(compiled):
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes
          + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _time(fn, args, repeats):
  jax.block_until_ready(fn(*args))  # Warm-up (and compile).
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


def measure(label, config_module, name, width, batch, eval_batch, quick):
  """Costs of one model (see module doc)."""
  config = config_module.get_config()
  config.model.name, config.model.width = name, width
  model = factory.build_model(config)
  size = config.dataset.image_size
  channels = 3
  variables = factory.init_variables(model, config, jax.random.key(0))
  tx = optim.make(config.optimizer, 1000)
  state = state_lib.create(variables["params"], variables["batch_stats"], tx,
                           jax.random.PRNGKey(1))
  # The trainer's one-program step on one device (`steps.jit_step`).
  jitted = steps.jit_step(
      model, lambda lg, lb, x, a: steps.cross_entropy(lg, lb), tx,
      parallel.make_mesh(jax.devices()[:1]), crop_padding=0, flip=True)
  step = lambda st, images, labels: jitted(st, images, labels, None)
  rng = np.random.default_rng(0)

  def batch_of(n):
    return (rng.integers(0, 256, (n, size, size, channels)).astype(np.uint8),
            rng.integers(0, 10, (n,)).astype(np.int32))

  images, labels = batch_of(batch)
  train_c = jitted.lower(state, images, labels, None).compile()
  apply_fn = models.inference_fn(model)
  infer = jax.jit(apply_fn)
  x_eval = jnp.asarray(batch_of(eval_batch)[0], jnp.float32) / 255.0
  infer_c = infer.lower(variables, x_eval).compile()

  def pgd_step(v, x, y):
    grad = jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(
        apply_fn(v, x), y).mean())(x)
    return jnp.clip(x + 2 / 255 * jnp.sign(grad), 0.0, 1.0)

  y_eval = jnp.zeros((eval_batch,), jnp.int32)
  pgd = jax.jit(pgd_step)
  pgd_c = pgd.lower(variables, x_eval, y_eval).compile()
  params = sum(int(np.prod(p.shape)) for p in
               jax.tree.leaves(variables["params"]))
  result = {
      "model": label, "image_size": size, "params": params,
      "train_batch": batch, "eval_batch": eval_batch,
      "train_flops_per_image": _flops(train_c) / batch,
      "eval_flops_per_image": _flops(infer_c) / eval_batch,
      "pgd_step_flops_per_image": _flops(pgd_c) / eval_batch,
      "train_step_bytes": _memory(train_c),
      "eval_bytes": _memory(infer_c),
      "pgd_step_bytes": _memory(pgd_c),
  }
  # CPU throughput at a small batch (the 224-px models are slow here).
  small = 8 if size > 64 else 32
  images, labels = batch_of(small)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # The step donates it.
  state = state_lib.create(copy(variables["params"]),
                           copy(variables["batch_stats"]), tx,
                           jax.random.PRNGKey(1))
  holder = [state]

  def one_train_step(images, labels):
    holder[0], metrics = step(holder[0], images, labels)
    return metrics

  repeats = 1 if quick else (2 if size > 64 else 5)
  t_train = _time(one_train_step, (images, labels), repeats)
  x_small = jnp.asarray(images, jnp.float32) / 255.0
  t_eval = _time(infer, (variables, x_small), repeats * 2)
  result.update({
      "cpu_batch": small,
      "cpu_train_images_per_s": small / t_train,
      "cpu_eval_images_per_s": small / t_eval,
      "cpu_train_gflops_per_s":
          result["train_flops_per_image"] * small / t_train / 1e9,
  })
  print(json.dumps(result), flush=True)
  return result


def matmul_gflops(n=4096, repeats=5):
  """XLA's float32 matmul rate on this machine (GFLOP/s)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return 2 * n ** 3 / _time(dot, (a, a), repeats) / 1e9


def measure_preparation(per_domain=40):
  """Seconds per image to build Office-31; seconds to convert weights."""
  out = {}
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    manual = os.path.join(tmp, "manual")
    for domain, (w, h) in OFFICE31_SIZES.items():
      for i in range(per_domain):
        folder = os.path.join(manual, domain, "images",
                              office31.CLASSES[i % 31])
        os.makedirs(folder, exist_ok=True)
        # Smooth random content, so JPEG sizes are photo-like.
        small = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(
            os.path.join(folder, f"frame_{i:04d}.jpg"), quality=90)
    spec = registry.get_spec("office31")
    for domain in OFFICE31_SIZES:
      t0 = time.perf_counter()
      registry.prepare_custom(spec, domain, os.path.join(tmp, "tfds"), manual)
      out[f"office31_{domain}_s_per_image"] = (
          (time.perf_counter() - t0) / per_domain)
    for depth in (18, 50):
      sd = pretrained_test.random_state_dict(depth, width=64,
                                             num_classes=1000)
      path = os.path.join(tmp, f"resnet{depth}.safetensors")
      st_numpy.save_file(sd, path)
      t0 = time.perf_counter()
      pretrained.convert_file(path, os.path.join(tmp, f"r{depth}"),
                              f"resnet{depth}")
      out[f"convert_resnet{depth}_s"] = time.perf_counter() - t0
  print(json.dumps(out), flush=True)
  return out


def main():
  quick = "--quick" in sys.argv
  load = os.getloadavg()
  results = {
      "machine": f"{harness.cpu_name()}, "
                 f"{os.cpu_count()} cores, jax {jax.__version__}",
      "load_average_at_start": load,
      "matmul_gflops_at_start": matmul_gflops(),
      "preparation": measure_preparation(),
      "models": [measure(*m, quick=quick) for m in MODELS],
      "matmul_gflops_at_end": matmul_gflops(),
      "load_average_at_end": os.getloadavg(),
  }
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "paper_scale_results.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print("Wrote", out)


if __name__ == "__main__":
  main()
