"""The study grid: which models to build, from `config.study`.

`config.study` block (every field is declared in configs/common.py):

  study.archs = ("resnet8:8", "resnet8:12", "resnet8:16")  # small to large
  study.seeds = 3                               # replicates of every model
  study.prune.sparsities = (0.5, 0.75, 0.9)     # unstructured
  study.prune.scopes = ("global",)              # global | layerwise
  study.prune.schedules = ("oneshot",)          # oneshot | gradual
  study.prune.structured = ()                   # channel sparsities
  study.prune.match_sizes = True                # + size-matched sparsities
  study.prune.gradual_above = 0.9               # gradual past this sparsity
  study.distill.teacher = "resnet8:16"          # one of archs
  study.distill.students = ("resnet8:8", "resnet8:12")
  study.quantize.weight_bits = (8, 4)
  study.quantize.archs = ()                     # PTQ'd archs; () = all
  study.quantize.pruned = ()                    # pruned sparsities + int8
  study.negative_control = "resnet8:16"         # one of archs; "" = none

Each model gets a stable `model_id` (the same for every seed); compressed
models name their `original_id` (the uncompressed network they came from;
the teacher for a distilled student) and `base_id` (the model they are
computed from: the original, or the pruned model for quantize-after-prune).

Pruned models whose sparsity is above `study.prune.gradual_above` are pruned
with the gradual schedule (compress.gradual_*) instead of one-shot, listed
and size-matched ones alike; their ids say so (`prune-global-gradual-s...`).

The negative control (`study.negative_control`) is a second, independently
initialised copy of that arch's original: `<prefix>/replicate`, method
`replicate`, trained with the original's recipe from a seed no other model
of the grid trains with (`training_seed`); its `original_id` is the
original, so it is evaluated (transfer attacks included) like a compressed
model of it, and a sound analysis finds no effect between the two.

Size-matched sparsities (`match_sizes`) make the comparisons of the claims
possible (robustjax/study/claims/): for every smaller arch S and larger L
and every sparsity s of S, L pruned to S's pruned size; the teacher pruned to
each student's size; every PTQ'd arch pruned to each of its PTQ models'
sizes. They are
solved here from the architectures' parameter shapes (sizes counted as in
robustjax/compress/size.py, global unstructured magnitude masks of a fresh
init); the claims match the measured sizes within +-15 %.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import flax
import jax
import numpy as np

from robustjax.compress import pruning
from robustjax.compress import quantization
from robustjax.compress import size as size_lib
from robustjax.models import factory


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  model_id: str
  arch: str  # "resnet8:16" style: registry name and width.
  method: str  # original | replicate | prune | distill | distill_control |
  # quantize (robustjax.compress.recipes.METHODS).
  setting: Tuple[Tuple[str, object], ...] = ()
  original_id: Optional[str] = None
  base_id: Optional[str] = None

  @property
  def settings(self) -> dict:
    return dict(self.setting)


def original_id(arch: str) -> str:
  name, width = factory.parse_arch(arch)
  return f"{name}-w{width}/original"


def seeds(config) -> List[int]:
  """The replicate seeds: `seed * 1000 + r` for r < study.seeds."""
  return [int(config.seed) * 1000 + r for r in range(int(config.study.seeds))]


# The negative control of seed s trains from s + this. Every other model of
# seed s trains from s itself, one of `seeds()` (config.seed * 1000 + r, r <
# study.seeds), all below it while config.seed < 2**21; JAX keys keep a
# seed's low 32 bits, and s + 2**31 < 2**32 keeps them apart from every
# seed below 2**31. A constant (not an offset by study.seeds) keeps a
# replicate the same model when a run has more seeds.
REPLICATE_SEED_OFFSET = 2**31


def training_seed(spec: "ModelSpec", seed: int) -> int:
  """The seed `spec` trains from in replicate `seed` (one of `seeds()`)."""
  if spec.method != "replicate":
    return seed
  if not 0 <= seed < REPLICATE_SEED_OFFSET:
    raise ValueError(f"Seed {seed} leaves no room for an independent "
                     f"replicate seed; use a config.seed below "
                     f"{REPLICATE_SEED_OFFSET // 1000}.")
  return seed + REPLICATE_SEED_OFFSET


def prune_schedule(config, sparsity: float, schedule: str = "oneshot"
                   ) -> str:
  """The schedule the grid prunes a model of `sparsity` with: gradual above
  `study.prune.gradual_above`, else `schedule` (its listed one)."""
  above = float(config.study.prune.get("gradual_above", 1.0))
  return "gradual" if sparsity > above else schedule


def _prune_spec(arch, scope, schedule, sparsity, structured=False,
                tag="") -> ModelSpec:
  base = original_id(arch)
  prefix = base.rsplit("/", 1)[0]
  kind = "channels" if structured else scope
  sched = "" if schedule == "oneshot" else f"-{schedule}"
  return ModelSpec(
      f"{prefix}/prune-{kind}{sched}-s{sparsity:g}{tag}", arch, "prune",
      (("schedule", schedule), ("scope", scope),
       ("sparsity", float(sparsity)), ("structured", bool(structured))),
      base, base)


def _no_init(config):
  c = config.copy_and_resolve_references()
  c.model.init = ""
  return c


class SizeSolver:
  """Sizes of pruned / quantized versions of each arch, before training.

  Pruned sizes follow global unstructured magnitude pruning of a fresh init
  (exact `k`, ties aside), counted with `size.sparse_bits` per kernel (dense
  when that is smaller) as `compress.size.model_size` counts them; computed
  from sorted magnitudes in numpy, so a bisection costs microseconds.
  """

  def __init__(self, config):
    self._config = config
    self._vars, self._profiles = {}, {}

  def _variables(self, arch: str):
    """Variables shaped like `arch`'s, kernels ~ N(0, 1/fan_in) (numpy).

    Shapes come from `jax.eval_shape` (no compile, no device work); the
    sizes only need shapes and the per-layer magnitude scale.
    """
    if arch not in self._vars:
      c = _no_init(self._config)
      model = factory.build_model(c, arch)
      shapes = jax.eval_shape(lambda: model.init(
          jax.random.PRNGKey(0), np.zeros(factory.input_shape(c),
                                          np.float32), train=False))
      rng = np.random.default_rng(0)

      def fill(path, leaf):
        if path[-1].key == "kernel":
          fan_in = int(np.prod(leaf.shape[:-1]))
          return (rng.standard_normal(leaf.shape) /
                  np.sqrt(fan_in)).astype(np.float32)
        return np.ones(leaf.shape, np.float32)
      self._vars[arch] = flax.core.unfreeze(
          jax.tree_util.tree_map_with_path(fill, shapes))
    return self._vars[arch]

  def _profile(self, arch: str):
    if arch not in self._profiles:
      v = self._variables(arch)
      c = self._config.compress
      flags = flax.traverse_util.flatten_dict(pruning.prunable_tree(
          v["params"], pruning.default_prunable(c.prune_first,
                                                c.prune_last)))
      flat = flax.traverse_util.flatten_dict(v["params"])
      layers = [(flat[k].shape, np.sort(np.abs(np.ravel(flat[k]))))
                for k, f in flags.items() if f]
      pool = np.sort(np.concatenate([m for _, m in layers]))
      fixed = self.dense_bits(arch) - 32 * len(pool)
      self._profiles[arch] = (layers, pool, fixed)
    return self._profiles[arch]

  def pruned_bits(self, arch: str, sparsity: float) -> float:
    layers, pool, fixed = self._profile(arch)
    k = int(np.floor(sparsity * len(pool) + 0.5))
    threshold = pool[k - 1] if k else -1.0
    fmt = self._config.compress.sparse_format
    bits = fixed
    for shape, mags in layers:
      nnz = len(mags) - int(np.searchsorted(mags, threshold, side="right"))
      bits += min(32 * len(mags),
                  size_lib.sparse_bits(shape, nnz, 32, fmt))
    return float(bits)

  def dense_bits(self, arch: str) -> float:
    return float(size_lib.dense_bits(self._variables(arch)))

  def quantized_bits(self, arch: str, bits: int) -> float:
    """As `size.model_size` counts `quantization.convert`'s output: each
    kernel at `bits` per weight + one float32 scale per output channel + one
    float32 activation scale; everything else float32."""
    flat = flax.traverse_util.flatten_dict(self._variables(arch))
    total = 0
    for path, x in flat.items():
      if path[0] == "params" and path[-1] == "kernel":
        total += x.size * bits + 32 * x.shape[-1] + 32
      else:
        total += 32 * x.size
    return float(total)

  def sparsity_for(self, arch: str, bits: float) -> Optional[float]:
    """Global sparsity whose pruned size is closest to `bits` (or None when
    even 99 % sparsity is larger, or the dense model is smaller)."""
    lo, hi = 0.0, 0.99
    if self.pruned_bits(arch, hi) > bits * 1.15 or self.dense_bits(
        arch) < bits * 0.85:
      return None
    for _ in range(30):
      mid = (lo + hi) / 2
      if self.pruned_bits(arch, mid) > bits:
        lo = mid
      else:
        hi = mid
    return round((lo + hi) / 2, 4)


def _matched_specs(config, have: Dict[str, ModelSpec]) -> List[ModelSpec]:
  """Pruned models at sizes that the claims' comparisons need."""
  study = config.study
  solver = SizeSolver(config)
  archs = sorted(study.archs, key=solver.dense_bits)
  targets = []  # (arch to prune, bits, why)
  for i, small in enumerate(archs):
    for large in archs[i + 1:]:
      for s in study.prune.sparsities:
        targets.append((large, solver.pruned_bits(small, s)))
  d = study.distill
  if d.teacher:
    for student in d.students:
      targets.append((d.teacher, solver.dense_bits(student)))
  for arch in quantized_archs(config):
    for bits in study.quantize.weight_bits:
      targets.append((arch, solver.quantized_bits(arch, int(bits))))
  out = []
  for arch, bits in targets:
    s = solver.sparsity_for(arch, bits)
    if s is None:
      continue
    # A model of the grid already pruned to about this size, the way the
    # grid prunes one of its sparsity (one-shot, or gradual above
    # `gradual_above`), serves.
    existing = [x for x in list(have.values()) + out
                if x.arch == arch and x.method == "prune" and
                not x.settings["structured"] and
                x.settings["schedule"] == prune_schedule(
                    config, x.settings["sparsity"]) and
                x.settings["scope"] == "global" and
                abs(solver.pruned_bits(arch, x.settings["sparsity"]) / bits
                    - 1) <= 0.15]
    if not existing:
      out.append(_prune_spec(arch, "global", prune_schedule(config, s), s))
  return out


def quantized_archs(config) -> List[str]:
  """The archs that get PTQ models: `study.quantize.archs`, () = all."""
  chosen = tuple(config.study.quantize.get("archs", ()))
  return [a for a in config.study.archs if not chosen or a in chosen]


def model_specs(config) -> List[ModelSpec]:
  """All models of the grid, each after the models it depends on."""
  study = config.study
  specs = {}

  def add(spec):
    if spec.model_id in specs:
      raise ValueError(f"Duplicate model {spec.model_id!r} in the study "
                       "grid; remove the repeated entry from config.study.")
    specs[spec.model_id] = spec

  for arch in study.archs:
    add(ModelSpec(original_id(arch), arch, "original"))
  for arch in study.archs:
    listed = {}  # model_id -> the (scope, schedule, sparsity) that made it.
    for scope in study.prune.scopes:
      for schedule in study.prune.schedules:
        for s in study.prune.sparsities:
          spec = _prune_spec(arch, scope, prune_schedule(config, s, schedule),
                             s)
          # Listed one-shot and gradual above `gradual_above`: one model.
          if listed.setdefault(spec.model_id,
                               (scope, schedule, s)) != (scope, schedule, s):
            continue
          add(spec)
    for s in study.prune.structured:
      add(_prune_spec(arch, "layerwise", prune_schedule(config, s), s,
                      structured=True))
  if study.prune.match_sizes:
    for spec in _matched_specs(config, specs):
      add(spec)
  for arch in quantized_archs(config):
    base = original_id(arch)
    prefix = base.rsplit("/", 1)[0]
    act = int(config.compress.act_bits) or 32
    for bits in study.quantize.weight_bits:
      add(ModelSpec(f"{prefix}/ptq-w{bits}a{act}", arch, "quantize",
                    (("activation_bits", act), ("weight_bits", int(bits))),
                    base, base))
    for s in study.quantize.pruned:
      pruned = _prune_spec(arch, "global", prune_schedule(config, s), s)
      if pruned.model_id not in specs:
        raise ValueError(
            f"study.quantize.pruned has {s}, but {pruned.model_id} is not in "
            "the grid; add the sparsity to study.prune.sparsities (global "
            "scope, one-shot schedule).")
      add(ModelSpec(f"{pruned.model_id}-ptq-w8a{act}", arch, "quantize",
                    (("activation_bits", act), ("pruned_sparsity", float(s)),
                     ("weight_bits", 8)), base, pruned.model_id))
  d = study.distill
  if d.teacher:
    if d.teacher not in study.archs:
      raise ValueError(f"study.distill.teacher={d.teacher!r} must be one of "
                       f"study.archs {tuple(study.archs)} (it is trained as "
                       "an original first).")
    teacher = original_id(d.teacher)
    c = config.compress
    for student in d.students:
      name, width = factory.parse_arch(student)
      add(ModelSpec(
          f"{name}-w{width}/distill-from-{d.teacher.replace(':', '-w')}"
          f"-T{c.kd_temperature:g}-a{c.kd_alpha:g}", student, "distill",
          (("alpha", float(c.kd_alpha)), ("teacher", d.teacher),
           ("temperature", float(c.kd_temperature))), teacher, teacher))
      add(ModelSpec(f"{name}-w{width}/distill-control", student,
                    "distill_control", (("alpha", 0.0), ("teacher", None)),
                    teacher, teacher))
  control = study.get("negative_control", "")
  if control:
    if control not in study.archs:
      raise ValueError(
          f"study.negative_control={control!r} must be one of study.archs "
          f"{tuple(study.archs)} (its replicate is compared with that "
          "original), or '' for none.")
    base = original_id(control)
    add(ModelSpec(f"{base.rsplit('/', 1)[0]}/replicate", control,
                  "replicate", original_id=base))
  return list(specs.values())


def dense_size_order(config) -> List[str]:
  """The archs from smallest to largest dense size."""
  solver = SizeSolver(config)
  return sorted(config.study.archs, key=solver.dense_bits)

