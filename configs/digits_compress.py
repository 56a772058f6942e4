r"""Compression of the digits ResNet: pruning, distillation, PTQ.

  python launch/compress.py --config=configs/digits_compress.py --workdir=/tmp/dcmp

Builds every model of the grid below (the same `study` grid and `compress`
settings the study uses, robustjax/study/grid.py): trains the base (ResNet-20,
width 16, 8 epochs; the digits_resnet recipe), prunes it (global and
layer-wise unstructured magnitude pruning, one-shot and gradual, at 50 / 75 /
90 / 95 %; channel pruning at 25 / 50 %) with fine-tuning, quantizes it (AQT
int8 / int4, and int8 after 90 % pruning), and distils it into two ResNet-8
students (widths 8 and 16) next to their no-KD controls. Every model is saved
in `/tmp/dcmp/models/<model_id>__s0/` and scored on the clean test split and
the UCI target domain (`/tmp/dcmp/results.jsonl`, `report.md`); rerunning
skips finished models and resumes an interrupted fine-tuning.

Arguments (after a colon): `model=resnet20`, `width=16`, `epochs=8`,
`runlocal` (tiny smoke run: a few steps per model).

Measured numbers (2-core CPU): docs/compression.md.
"""

from configs import common


def get_config(arg=None):
  """Returns the config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, model="resnet20", width=16, epochs=8.0,
                         runlocal=False)
  c = common.digits_config(arg.model, arg.width, arg.epochs)
  c.study_name = "digits compression grid"
  arch = f"{arg.model}:{arg.width}"
  c.study.archs = (arch,)
  c.study.prune.sparsities = (0.5, 0.75, 0.9, 0.95)
  c.study.prune.scopes = ("global", "layerwise")
  c.study.prune.schedules = ("oneshot", "gradual")
  c.study.prune.structured = (0.25, 0.5)
  c.study.distill.teacher = arch
  c.study.distill.students = ("resnet8:8", "resnet8:16")
  c.study.quantize.weight_bits = (8, 4)
  c.study.quantize.pruned = (0.9,)
  if arg.runlocal:
    common.runlocal_overrides(c)
    c.study.prune.sparsities = (0.9,)
    c.study.prune.scopes = ("global",)
    c.study.prune.structured = (0.5,)
    c.compress.gradual_update_every = 2
    c.study.distill.students = ("resnet8:4",)
    c.compress.calib_examples = 128
  return c
