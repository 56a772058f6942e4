r"""The default study: compressed-model robustness on the embedded digits data.

  python launch/study.py --config=configs/default.py --workdir=workdirs/default

Offline, no download: MNIST-5k (source) -> UCI digits (target), 16x16 grey.
Grid: ResNet-8 and ResNet-20 (width 16; 78 k and 272 k parameters) trained
from scratch; global unstructured magnitude pruning at 50/75/90 % with
fine-tuning; AQT post-training quantization int8 and int4 (int8
activations); Hinton distillation ResNet-20 -> ResNet-8 (width 8) with its
no-KD control. Every model is evaluated on: the MNIST test split (clean), the
UCI target domain, all 15 benchmark corruptions x 5 severities (CIFAR
severity table, first 500 test images) and FGSM / PGD-Linf (10 steps) at
eps 0, 0.02, 0.05, 0.1, 0.2 (first 200 test images).

Sizes chosen to finish in <= 10 minutes on a 2-core CPU; measured runtime and
results: README.md ("The default study").

Arguments: `runlocal` (a tiny smoke version used by the tests and the colab).
"""

from configs import common


def get_config(arg=None):
  """Returns the study config; `arg` is `runlocal` or empty."""
  arg = common.parse_arg(arg, runlocal=False)
  c = common.digits_config()
  c.study_name = "digits (MNIST-5k -> UCI), default grid"
  c.log_every_steps = 100
  c.checkpoint_every_steps = 200

  c.study.archs = ("resnet8:16", "resnet20:16")
  c.study.seeds = 1
  c.study.prune.sparsities = (0.5, 0.75, 0.9)
  c.study.distill.teacher = "resnet20:16"
  c.study.distill.students = ("resnet8:8",)
  c.study.quantize.weight_bits = (8, 4)
  c.compress.finetune_epochs = 2.0
  c.compress.finetune_lr = 0.01
  c.compress.kd_epochs = 8.0

  c.evals.corruptions.names = common.BENCHMARK_CORRUPTIONS
  c.evals.corruptions.max_examples = 500
  c.evals.attacks.names = ("fgsm", "pgd_linf")
  c.evals.attacks.eps = (0.0, 0.02, 0.05, 0.1, 0.2)
  c.evals.attacks.steps = 10
  c.evals.attacks.max_examples = 200

  if arg.runlocal:
    common.runlocal_overrides(c)
    c.study.archs = ("resnet8:4", "resnet8:8")
    c.study.prune.sparsities = (0.9,)
    c.compress.finetune_epochs = 0.25
    c.study.quantize.weight_bits = (8,)
    c.study.distill.teacher = "resnet8:8"
    c.study.distill.students = ("resnet8:4",)
    c.compress.kd_epochs = 0.5
    c.evals.corruptions.names = ("gaussian_noise", "contrast")
    c.evals.corruptions.max_examples = 64
    c.evals.attacks.eps = (0.0, 0.1)
    c.evals.attacks.steps = 3
    c.evals.attacks.max_examples = 32
  return c
