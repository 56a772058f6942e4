r"""A/B of the attack evaluator's two forms: one program vs staged.

  PYTHONPATH=. python benchmarks/probes/attack_stages.py \
      --arch=resnet8 --width=16 --size=16 --channels=1 --examples=200 \
      --eps=0.02,0.05

`evaluators.attack.adversarial_images` (PGD-Linf, 10 steps, random start)
on a randomly initialised model in the launchers' default process
(`cpu_setup.configure_host_devices()`, every device), run in one program
(`staged=False`, the default) and as a start program plus a step program
called `--steps` times from the host (`staged=True`, `evals.attacks.staged`).
Prints each form's first-call compile seconds (JAX's trace + lower + XLA
events, `robustjax.timing`), whether the two give the same images bit for
bit, and the median seconds per attack over `--rounds` alternating rounds
(one chunk of `--examples` images x the eps grid), with the per-round time
ratio. The "2026-12-01, night" tables of benchmarks/compile_results.md
came from an uncommitted copy of this script.
"""

import argparse

import bench_model  # benchmarks/probes/, the script's own folder.


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bench_model.add_flags(parser, arch="resnet8", size=16, channels=1)
  bench_model.add_attack_flags(parser)
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

  n = args.examples
  model, images, labels = bench_model.model_and_batch(args, n)
  variables = model.init(jax.random.key(0),
                         jnp.zeros((1,) + images.shape[1:]), train=False)
  apply_fn = models.inference_fn(model)
  eps = np.asarray([float(e) for e in args.eps.split(",")], np.float32)
  attack = attacks.pgd(steps=args.steps)
  mesh = parallel.make_mesh()
  runs = {name: (lambda staged=staged: attack_eval.adversarial_images(
      apply_fn, variables, images, labels, jax.random.key(1), eps, attack,
      n, mesh, staged=staged)) for name, staged in (("one program", False),
                                                    ("staged", True))}
  outputs, compile_s, seconds = bench_model.time_alternately(runs,
                                                              args.rounds)
  same = np.array_equal(*outputs.values())
  ratios = [a / b for a, b in zip(seconds["staged"], seconds["one program"])]
  print(f"{args.arch} w{args.width} {args.size}px x{args.channels}, {n} examples x "
        f"{len(eps)} eps, PGD-{args.steps}, {mesh.devices.size} device(s); "
        f"bit-identical: {same}")
  bench_model.print_runs(compile_s, seconds, 12)
  print(f"staged / one program time per round: median "
        f"{np.median(ratios):.3f} {[round(x, 3) for x in ratios]}")


if __name__ == "__main__":
  main()
