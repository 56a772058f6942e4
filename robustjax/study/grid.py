"""The study grid: which models to build, from `config.study`.

`config.study` block (see configs/default.py):

  study.archs = ("resnet8:16", "resnet20:16")   # name:width, small to large
  study.prune.sparsities = (0.5, 0.75, 0.9)
  study.prune.scopes = ("global",)              # global | layerwise
  study.prune.structured = ()                   # channel sparsities
  study.prune.finetune_epochs = 2.0
  study.distill.teacher = "resnet20:16"         # one of archs
  study.distill.students = ("resnet8:8",)
  study.distill.temperature = 4.0
  study.distill.alpha = 0.9
  study.distill.epochs = 8.0
  study.quantize.weight_bits = (8, 4)
  study.quantize.activation_bits = 8

Each model gets a stable, unique `model_id`; compressed models name their
`original_id` (the uncompressed network they came from; the teacher for a
distilled student) so metrics can be taken relative to it.
"""

import dataclasses
from typing import List, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  model_id: str
  arch: str  # "resnet8:16" style: registry name and width.
  method: str  # original | prune | distill | distill_control | quantize
  setting: Tuple[Tuple[str, object], ...] = ()
  original_id: Optional[str] = None

  @property
  def settings(self) -> dict:
    return dict(self.setting)


def parse_arch(arch: str) -> Tuple[str, int]:
  """"resnet20:16" -> ("resnet20", 16); the width defaults to 16."""
  name, _, width = arch.partition(":")
  return name, int(width) if width else 16


def original_id(arch: str) -> str:
  name, width = parse_arch(arch)
  return f"{name}-w{width}/original"


def model_specs(study) -> List[ModelSpec]:
  """All models of the grid, each after the models it depends on."""
  specs = []
  for arch in study.archs:
    specs.append(ModelSpec(original_id(arch), arch, "original"))
  for arch in study.archs:
    base = original_id(arch)
    prefix = base.rsplit("/", 1)[0]
    for scope in study.prune.scopes:
      for s in study.prune.sparsities:
        specs.append(ModelSpec(
            f"{prefix}/prune-{scope}-s{s:g}", arch, "prune",
            (("scope", scope), ("sparsity", float(s)),
             ("structured", False)), base))
    for s in study.prune.structured:
      specs.append(ModelSpec(
          f"{prefix}/prune-channels-s{s:g}", arch, "prune",
          (("scope", "layerwise"), ("sparsity", float(s)),
           ("structured", True)), base))
    for bits in study.quantize.weight_bits:
      specs.append(ModelSpec(
          f"{prefix}/ptq-w{bits}a{study.quantize.activation_bits}", arch,
          "quantize", (("activation_bits", study.quantize.activation_bits),
                       ("weight_bits", int(bits))), base))
  d = study.distill
  if d.teacher:
    if d.teacher not in study.archs:
      raise ValueError(f"study.distill.teacher={d.teacher!r} must be one of "
                       f"study.archs {tuple(study.archs)} (it is trained as "
                       "an original first).")
    teacher_id = original_id(d.teacher)
    for student in d.students:
      name, width = parse_arch(student)
      setting = (("alpha", float(d.alpha)), ("teacher", d.teacher),
                 ("temperature", float(d.temperature)))
      specs.append(ModelSpec(
          f"{name}-w{width}/distill-from-{d.teacher.replace(':', '-w')}"
          f"-T{d.temperature:g}-a{d.alpha:g}", student, "distill", setting,
          teacher_id))
      specs.append(ModelSpec(f"{name}-w{width}/distill-control", student,
                             "distill_control", (("alpha", 0.0),
                                                 ("teacher", None)),
                             teacher_id))
  ids = [s.model_id for s in specs]
  if len(set(ids)) != len(ids):
    raise ValueError(f"Duplicate models in the study grid: {ids}.")
  return specs
