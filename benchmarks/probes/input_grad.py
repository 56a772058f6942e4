r"""A/B of the attacks' input gradients: `models.input_grad` vs lax's.

  PYTHONPATH=. python benchmarks/probes/input_grad.py \
      --arch=resnet8 --width=16 --size=16 --channels=1 --examples=200 \
      --eps=0.02,0.05

`evaluators.attack.adversarial_images` (PGD-Linf, 10 steps, random start,
one program) on a randomly initialised model in the launchers' default
process (`cpu_setup.configure_host_devices()`, every device), with the
suite's apply function `models.inference_fn(model)` (its convolutions'
input gradients from `robustjax.models.input_grad`) and with flax's plain
`model.apply` (lax's input gradients, the code before `input_grad`).
Prints each one's first-call compile seconds (`robustjax.timing`), the
share of adversarial pixels that agree bit for bit, and the median seconds
per attack over `--rounds` alternating rounds with the per-round ratio.

`--layers`: instead, times each convolution whose input gradient
`models.input_grad` changes, at the shapes of a CIFAR-style ResNet of
`--width` on `--size` x `--channels` inputs (the stem and the stride-2
layers), batch `--batch`, one device: forward pass, lax's input gradient
and `input_grad`'s, median ms of 5 x 10 calls, and their relative
difference.

Results: benchmarks/attacks_results.md ("2026-12-02").
"""

import argparse
import functools
import time

import bench_model  # benchmarks/probes/, the script's own folder.


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bench_model.add_flags(parser, arch="resnet8", size=16, channels=1)
  bench_model.add_attack_flags(parser)
  parser.add_argument("--layers", action="store_true",
                      help="time the changed convolutions one by one.")
  parser.add_argument("--batch", type=int, default=128,
                      help="batch of --layers.")
  args = parser.parse_args()
  bench_model.configure_process()
  # pylint: disable=g-import-not-at-top
  from robustjax import parallel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from robustjax import models
  from robustjax.robustness import attacks
  from robustjax.robustness.evaluators import attack as attack_eval
  # pylint: enable=g-import-not-at-top

  if args.layers:
    _layers(args)
    return
  n = args.examples
  model, images, labels = bench_model.model_and_batch(args, n)
  variables = model.init(jax.random.key(0),
                         jnp.zeros((1,) + images.shape[1:]), train=False)
  eps = np.asarray([float(e) for e in args.eps.split(",")], np.float32)
  attack = attacks.pgd(steps=args.steps)
  mesh = parallel.make_mesh()
  fns = {"input_grad": models.inference_fn(model),
         "lax": functools.partial(model.apply, train=False)}
  runs = {name: (lambda fn=fn: attack_eval.adversarial_images(
      fn, variables, images, labels, jax.random.key(1), eps, attack, n,
      mesh)) for name, fn in fns.items()}
  outputs, compile_s, seconds = bench_model.time_alternately(runs,
                                                              args.rounds)
  same = float(np.mean(outputs["input_grad"] == outputs["lax"]))
  ratios = [b / a for a, b in zip(seconds["input_grad"], seconds["lax"])]
  print(f"{args.arch} w{args.width} {args.size}px x{args.channels}, {n} "
        f"examples x {len(eps)} eps, PGD-{args.steps}, {mesh.devices.size} "
        f"device(s); adversarial pixels bit-identical: {same:.6f}")
  bench_model.print_runs(compile_s, seconds, 10)
  print(f"speed-up (lax time / input_grad time) per round: median "
        f"{np.median(ratios):.3f} {[round(x, 3) for x in ratios]}")


def _layers(args):
  """Times the stem and strided convolutions' input gradients."""
  # pylint: disable=g-import-not-at-top
  import jax
  from jax import lax
  import jax.numpy as jnp
  import numpy as np
  from robustjax.models import input_grad
  # pylint: enable=g-import-not-at-top
  nhwc = ("NHWC", "HWIO", "NHWC")
  w0, s0 = args.width, args.size
  # (name, input size, in channels, out channels, kernel, stride)
  layers = [("stem 3x3", s0, args.channels, w0, 3, 1),
            ("stage 2 3x3/2", s0, w0, 2 * w0, 3, 2),
            ("stage 2 shortcut 1x1/2", s0, w0, 2 * w0, 1, 2),
            ("stage 3 3x3/2", s0 // 2, 2 * w0, 4 * w0, 3, 2),
            ("stage 3 shortcut 1x1/2", s0 // 2, 2 * w0, 4 * w0, 1, 2)]
  rng = np.random.default_rng(0)

  def ms(f, *a):
    """Median wall and CPU (all threads) ms per call, and the output."""
    f = jax.jit(f)
    jax.block_until_ready(f(*a))
    times = []
    for _ in range(5):
      start, cpu = time.perf_counter(), time.process_time()
      for _ in range(10):
        out = f(*a)
      jax.block_until_ready(out)
      times.append(((time.perf_counter() - start) / 10 * 1e3,
                    (time.process_time() - cpu) / 10 * 1e3))
    return tuple(np.median(times, axis=0)), f(*a)

  print(f"batch {args.batch}, one device ({jax.devices()[0]}); ms per call, "
        "wall / CPU (all threads)")
  print("| layer | forward | lax input gradient | input_grad | speed-up, "
        "wall / CPU | rel. difference |")
  print("|---|---|---|---|---|---|")
  for name, size, cin, cout, k, stride in layers:
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)),
                    jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    pad = ((k - 1) // 2,) * 2

    def grad(conv_fn):
      fwd = lambda x, w: conv_fn(x, w, (stride,) * 2, (pad, pad),  # pylint: disable=g-long-lambda
                                 dimension_numbers=nhwc)
      return lambda x, w, dy: jax.vjp(lambda x: fwd(x, w), x)[1](dy)[0]

    y = lax.conv_general_dilated(x, w, (stride,) * 2, (pad, pad),
                                 dimension_numbers=nhwc)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    t_fwd, _ = ms(lambda x, w: lax.conv_general_dilated(  # pylint: disable=g-long-lambda
        x, w, (stride,) * 2, (pad, pad), dimension_numbers=nhwc), x, w)
    t_lax, ref = ms(grad(lax.conv_general_dilated), x, w, dy)
    t_new, out = ms(grad(input_grad.conv_general_dilated), x, w, dy)
    diff = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
    print(f"| {name}, {size}x{size}x{cin} -> {cout} | "
          f"{t_fwd[0]:.2f} / {t_fwd[1]:.2f} | {t_lax[0]:.2f} / {t_lax[1]:.2f}"
          f" | {t_new[0]:.2f} / {t_new[1]:.2f} | {t_lax[0] / t_new[0]:.2f}x"
          f" / {t_lax[1] / t_new[1]:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
  main()
