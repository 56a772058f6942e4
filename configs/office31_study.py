r"""The study at paper scale on Office-31: ResNet-18 / ResNet-50, 224 px.

  # One source domain per run; its two targets are the domain shift. The
  # three runs cover all six source -> target pairs:
  for s in amazon dslr webcam; do
    python launch/study.py --workdir=workdirs/office31_$s \
      --config=configs/office31_study.py:source=$s,init=/w/{name}.safetensors
  done

Needs the manually downloaded Office-31 folder (BUILD.md, "Office-31") and,
for `init=`, torchvision-layout ImageNet weights per architecture, "{name}"
standing for the model name (/w/resnet18.safetensors, /w/resnet50.safetensors;
docs/pretrained.md). Without `init=` every network trains from scratch on a
few thousand images, far below the pretrained protocol: the report then
opens with a warning saying so.

Protocol: train on the source domain's `train` split (80 %), clean accuracy
on its held-out `test` split (20 %), domain shift on every image (`full`) of
the two other domains; images prepared at 256x256, models at 224 px (random
crops + flips in training). Grid: the default study's (configs/default.py,
`common.compression_grid`), 3 seeds: ResNet-18 and ResNet-50 (width 64, the
torchvision layout); global magnitude pruning at 75 % plus the size-matched
sparsities; AQT PTQ int8 / int4; distillation ResNet-50 -> ResNet-18 with
its no-KD control (one student: claim (c) is capped at inconclusive).
Shifts: the 15 benchmark corruptions x 5 severities with the ImageNet
severity table, on the whole held-out test split; FGSM and PGD-Linf (10
steps) at eps 0, 1, 2, 4, 8 /255, with transfer attacks from each float
original.

Not run here: no Office-31 data or accelerator on the 2-core CPU dev
machine. `runlocal` (ResNet-18 at width 8, 32 px, and its 90 %-pruned
version, one seed; two corruptions, PGD at 8/255) is run end to end through
launch/study.py by tests/study/paper_configs_test.py on a generated folder of
JPEGs, initialised from random torchvision-layout weights via `init=`.

Arguments: `source=amazon|dslr|webcam`, `init=PATH` (may contain {name}),
`manual_dir=PATH`, `data_dir=PATH`, `epochs=20`, `seeds=3`, `runlocal`.
"""

from configs import common
from configs import office31_resnet

# Attack budgets in 1/255 pixel units.
EPS_255 = (0, 1, 2, 4, 8)


def get_config(arg=None):
  """Returns the study config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, source="amazon", init="", manual_dir="",
                         data_dir="", epochs=20.0, seeds=3, runlocal=False)
  c = office31_resnet.get_config(
      f"model=resnet50,source={arg.source},init={arg.init},"
      f"manual_dir={arg.manual_dir},data_dir={arg.data_dir},"
      f"epochs={arg.epochs},runlocal={arg.runlocal}")
  c.study_name = (f"Office-31 {arg.source} -> "
                  f"{' + '.join(c.dataset.targets)}, ResNet-18/50")
  c.dataset.train_split = "train"
  c.dataset.test_split = "test"
  c.dataset.target_split = "full"
  c.checkpoint_every_steps = 250

  common.compression_grid(c, ("resnet18:64", "resnet50:64"),
                          teacher="resnet50:64", students=("resnet18:64",),
                          seeds=arg.seeds)
  c.compress.finetune_epochs = 5.0
  c.compress.finetune_lr = c.optimizer.learning_rate / 10
  c.compress.kd_epochs = -1.0  # As long as the originals.

  c.evals.batch_size = 128
  c.evals.corruptions.names = ("benchmark",)  # The 15 benchmark ones.
  c.evals.corruptions.table = "imagenet"
  c.evals.corruptions.max_examples = -1
  c.evals.attacks.names = ("fgsm", "pgd_linf")
  c.evals.attacks.eps = tuple(e / 255 for e in EPS_255)
  c.evals.attacks.steps = 10
  c.evals.attacks.max_examples = -1
  c.evals.attacks.chunk_size = 32

  if arg.runlocal:
    # The base's smoke settings (32 px, batch 8) plus a one-model grid.
    common.runlocal_study(c, ("resnet18:8",))
    # Test time on 2 CPU cores: the original and its pruned version (they
    # share every compiled evaluation program), one attack.
    c.study.quantize.weight_bits = ()
    c.evals.batch_size = 16
    c.evals.attacks.names = ("pgd_linf",)
  if not arg.init:
    c.study.notes = (
        "**Warning: trained from scratch** (no `init=`): the paper's "
        "protocol fine-tunes ImageNet weights; networks trained on a few "
        "thousand Office-31 images reach far lower accuracies, so these "
        "numbers are not comparable with it.",)
  return c
