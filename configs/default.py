r"""The default study: compressed-model robustness on the embedded digits data.

  python launch/study.py --config=configs/default.py --workdir=workdirs/default
  python launch/study.py --config=configs/default.py:seeds=10 \
      --workdir=workdirs/default10

Offline, no download: MNIST-5k (source) -> UCI digits (target), 16x16 grey.
Grid, every model once per seed (3 seeds; `seeds=N` for N): ResNet-8 at
widths 8, 12 and 16 (20 k, 44 k, 78 k parameters) trained from scratch for 4
epochs; global unstructured magnitude pruning at 75 % with 1 epoch of
fine-tuning, plus the size-matched sparsities the claims need (each larger
net pruned to each smaller net's pruned size, the teacher pruned to each
student's size, the teacher pruned to its int8 / int4 PTQ sizes); models
above 90 % sparsity (w12 at 91.9 %, w16 at 91.1 % and 97.5 %) are pruned
gradually instead (Zhu & Gupta: the sparsity reached at half of 3 epochs of
fine-tuning at peak lr 0.2; one-shot with 1 epoch at 0.01 had left the w16
at 97.5 % at 66.8 % clean accuracy, its original at 97.3 %); AQT
post-training quantization int8 and int4 (int8 activations) of the largest
net (ResNet-8 w16, the teacher: PTQ of the smaller nets would add 8 models
per seed and no comparison claim (d) needs); Hinton distillation ResNet-8
w16 -> w8 and w12 (3 epochs) with their no-KD controls; and the negative
control, a second ResNet-8 w16 trained like the original from an independent
seed (`resnet8-w16/replicate`, evaluated like a compressed model of the
original: the claims must find no effect on it). Every model is evaluated on
the MNIST test split (clean), the UCI target domain, all 15 benchmark
corruptions x 5 severities (CIFAR table, first 200 test images), FGSM /
PGD-Linf (10 steps) at eps 0, 0.02, 0.05 (first 200 test images; a run with
0.1 as well left its 54 models at 2.4 % mean PGD-10 accuracy there,
0-15.5 %: little to compare, for a third of the attack time), and every
compressed model (and the replicate) also under transfer attacks crafted on
its float original.

Sizes chosen to finish in about 10 minutes on a 2-core CPU; the measured
runtime, where the time goes and the results: README.md ("The default
study"), generated from docs/results/default/.

Arguments: `seeds=N` (replicates of every model, default 3); `runlocal` (a
tiny smoke version used by the tests and the colab).
"""

from configs import common


def get_config(arg=None):
  """Returns the study config; `arg` is e.g. `seeds=10`, `runlocal`."""
  arg = common.parse_arg(arg, seeds=3, runlocal=False)
  c = common.digits_config("resnet8", 16, epochs=4.0)
  c.study_name = "digits (MNIST-5k -> UCI), default grid"
  c.log_every_steps = 100
  c.checkpoint_every_steps = 250

  common.compression_grid(c, ("resnet8:8", "resnet8:12", "resnet8:16"),
                          teacher="resnet8:16",
                          students=("resnet8:8", "resnet8:12"),
                          seeds=arg.seeds, quantize_archs=("resnet8:16",))
  c.compress.finetune_epochs = 1.0
  c.compress.finetune_lr = 0.01
  c.compress.kd_epochs = 3.0
  # One-shot pruning past 90 % and 1 epoch at lr 0.01 left the w16 at 97.5 %
  # collapsed; the models above it are pruned gradually, retrained at a
  # high lr and given half of the fine-tuning at their final sparsity.
  c.study.prune.gradual_above = 0.9
  c.compress.gradual_epochs = 3.0
  c.compress.gradual_lr = 0.2
  c.compress.gradual_end_fraction = 0.5
  c.study.negative_control = "resnet8:16"

  c.evals.corruptions.names = ("benchmark",)  # The 15 benchmark ones.
  c.evals.corruptions.max_examples = 200
  c.evals.attacks.names = ("fgsm", "pgd_linf")
  c.evals.attacks.eps = (0.0, 0.02, 0.05)
  c.evals.attacks.steps = 10
  c.evals.attacks.max_examples = 200
  # One chunk of 200 examples per model and attack: compile-bound, so the
  # attacks run as start + step programs (PGD-10 compiles about as fast as
  # FGSM and shares its step, for slightly slower chunks).
  c.evals.attacks.staged = True
  # Several short trainings per architecture: the train step as gradient +
  # update programs, so each model's pruning fine-tunes reuse its gradient
  # program (the same numbers, less compile).
  c.split_train_step = True

  if arg.runlocal:
    common.runlocal_overrides(c)
    common.runlocal_study(c, ("resnet8:4", "resnet8:8"), teacher="resnet8:8",
                          students=("resnet8:4",), seeds=2)
  return c
