"""Time of the claims' bootstrap (`test_claims` + `sanity_checks`).

Run by hand (not part of the tests):

  PYTHONPATH=. python benchmarks/claims_benchmark.py \
      --out=benchmarks/claims_results.md

Synthetic studies with the shape of real ones (per-example correctness from
a latent difficulty per example shared by all models; the numbers are
meaningless, only the shapes matter):

* `digits`: configs/default.py's grid (2 archs x (original, 3 prunings,
  int8, int4) + student + control = 14 models), 1000 clean / 1797 target
  examples, 15 corruptions x 5 severities on 500, FGSM + PGD x 4 eps on 200;
  with 1 and with 3 seeds.
* `cifar`: 3 archs x (original, 4 prunings, int8, int4) + 2 students with
  controls = 25 models, 3 seeds, 10000 clean / 10000 target examples,
  15 x 5 corruptions on 10000, 3 attacks x 4 eps on 1000.

For each: wall and CPU time of the first call (includes XLA compilation)
and of a second call (compiled programs reused), B = 2000 replicates, and the
1-minute load average before and after (on a shared machine the CPU time is
the steadier figure).
"""

import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from robustjax.study import claims

_OUT = flags.DEFINE_string("out", "", "Markdown file for the results.")
_REPLICATES = flags.DEFINE_integer("replicates", 2000, "Bootstrap B.")


def _study(archs, sparsities, students, seeds, n_clean, n_target, n_corr,
           n_adv, attacks):
  """Synthetic StudyData with the grid's models and cells."""
  rng = np.random.default_rng(0)
  latent = {}

  def u(seed, key, n):
    if (seed, key) not in latent:
      latent[(seed, key)] = rng.random(n)
    return latent[(seed, key)]

  def model(arch, method, size, acc, original=None, setting=None):
    cells = {}
    for s in seeds:
      jitter = rng.normal(0, 0.01)
      cells[(s, "clean", "source")] = {
          None: u(s, "clean", n_clean) < acc + jitter}
      cells[(s, "domain", "target")] = {
          None: u(s, "target", n_target) < acc - 0.3 + jitter}
      for c in range(15):
        cells[(s, "corruption", f"c{c}")] = {
            sev: u(s, f"c{c}/{sev}", n_corr) < acc - 0.05 * sev + jitter
            for sev in range(1, 6)}
      for a in attacks:
        cells[(s, "adversarial", a)] = {
            eps: u(s, f"{a}/{eps}", n_adv) < acc - 4 * eps + jitter
            for eps in (0.0, 0.02, 0.05, 0.1, 0.2)}
    return dict(arch=arch, method=method, size_bits=size, original_id=original,
                setting=setting or {}, cells=cells)

  models = {}
  for i, (arch, params) in enumerate(archs):
    o = f"{arch}/original"
    size = 32.0 * params
    models[o] = model(arch, "original", size, 0.95 - 0.02 * i)
    for sp in sparsities:
      models[f"{arch}/prune{sp}"] = model(
          arch, "prune", size * (1 - sp) * 1.03, 0.9 - 0.2 * sp, o,
          {"scope": "global", "structured": False, "sparsity": sp})
    for bits in (8, 4):
      models[f"{arch}/ptq{bits}"] = model(
          arch, "quantize", size * bits / 32, 0.94 - 0.1 * (bits == 4), o,
          {"weight_bits": bits, "activation_bits": 8})
  teacher = f"{archs[-1][0]}/original"
  for arch, params in students:
    models[f"{arch}/distill"] = model(arch, "distill", 32.0 * params, 0.9,
                                      teacher, {"teacher": archs[-1][0]})
    models[f"{arch}/control"] = model(arch, "distill_control", 32.0 * params,
                                      0.88, teacher)
  return claims.make_study_data(models)


def _time(data, replicates):
  """(wall seconds, CPU seconds of this process) of one full evaluation."""
  t, cpu = time.perf_counter(), time.process_time()
  claims.test_claims(data, num_replicates=replicates)
  claims.sanity_checks(data, num_replicates=replicates)
  return time.perf_counter() - t, time.process_time() - cpu


def main(_):
  cases = {
      "digits, 1 seed": dict(
          archs=[("resnet8:16", 78e3), ("resnet20:16", 272e3)],
          sparsities=(0.5, 0.75, 0.9), students=[("resnet8:8", 20e3)],
          seeds=(0,), n_clean=1000, n_target=1797, n_corr=500, n_adv=200,
          attacks=("fgsm", "pgd_linf")),
      "digits, 3 seeds": dict(
          archs=[("resnet8:16", 78e3), ("resnet20:16", 272e3)],
          sparsities=(0.5, 0.75, 0.9), students=[("resnet8:8", 20e3)],
          seeds=(0, 1, 2), n_clean=1000, n_target=1797, n_corr=500,
          n_adv=200, attacks=("fgsm", "pgd_linf")),
      "cifar, 3 seeds": dict(
          archs=[("resnet20:16", 272e3), ("resnet32:16", 467e3),
                 ("resnet56:16", 856e3)],
          sparsities=(0.5, 0.75, 0.9, 0.95),
          students=[("resnet8:16", 78e3), ("resnet14:16", 175e3)],
          seeds=(0, 1, 2), n_clean=10000, n_target=10000, n_corr=10000,
          n_adv=1000, attacks=("fgsm", "pgd_linf", "transfer_pgd_linf")),
  }
  lines = [f"Machine: {os.cpu_count()} CPU cores, "
           f"{jax.devices()[0].device_kind}; B = {_REPLICATES.value}.", "",
           "| study | models | first call: wall / CPU s (with compile) | "
           "second call: wall / CPU s | load before / after |",
           "|---|---|---|---|---|"]
  for name, kw in cases.items():
    data = _study(**kw)
    load0 = os.getloadavg()[0]
    first = _time(data, _REPLICATES.value)
    second = _time(data, _REPLICATES.value)
    load1 = os.getloadavg()[0]
    n_models = len({r["model_id"] for r in data.rows})
    lines.append(f"| {name} | {n_models} | {first[0]:.1f} / {first[1]:.1f} "
                 f"| {second[0]:.1f} / {second[1]:.1f} | "
                 f"{load0:.1f} / {load1:.1f} |")
    print(lines[-1], flush=True)
  text = "\n".join(lines) + "\n"
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text)


if __name__ == "__main__":
  app.run(main)
