r"""Compression of the digits ResNet: pruning, distillation, PTQ.

  python launch/compress.py --config=configs/digits_compress.py --workdir=/tmp/dcmp

Trains the base (ResNet-20, width 16, 8 epochs; the digits_resnet recipe) in
`/tmp/dcmp/base/` unless `base=DIR` names a finished training run, then
writes every compressed model of `compress.*` below into its own subfolder
and the manifest `/tmp/dcmp/compressed.json`. Rerunning skips finished
models and resumes an interrupted fine-tuning.

Arguments (after a colon): `model=resnet20`, `width=16`, `epochs=8`,
`base=DIR` (a trained workdir of the same model), `runlocal` (tiny smoke
run: a few steps per model).

Hardware / runtime / results: docs/compression.md, measured with this exact
command on a 2-core CPU: 6 min for all 20 models including the base. Seed 0,
MNIST test / UCI target: original 98.1 / 73.2; 90 % global unstructured
sparsity 97.1 / 63.9 (6.96x smaller); int8 PTQ 98.1 / 72.7 (3.82x); int4
97.6 / 69.6 (7.24x); ResNet-8 w16 student with KD 98.3 / 71.6, without KD
97.3 / 60.3 (3.49x).
"""

import ml_collections

from configs import common

# 'scope:structure:schedule:sparsity' (see robustjax/compress/pruning.py).
PRUNE_RUNS = (
    *(f"global:unstructured:oneshot:{s}" for s in (0.5, 0.75, 0.9, 0.95)),
    *(f"layerwise:unstructured:oneshot:{s}" for s in (0.5, 0.75, 0.9, 0.95)),
    *(f"global:unstructured:gradual:{s}" for s in (0.9, 0.95)),
    *(f"layerwise:channel:oneshot:{s}" for s in (0.25, 0.5)),
)


def get_config(arg=None):
  """Returns the config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, model="resnet20", width=16, epochs=8.0,
                         base="", runlocal=False)
  c = common.digits_config(arg.model, arg.width, arg.epochs)

  c.compress = ml_collections.ConfigDict()
  p = c.compress
  p.base_workdir = arg.base  # Trained base run; "" = train it in DIR/base.
  p.sparse_format = "bitmap"  # Size accounting of zeros: bitmap|csr|channel.
  # Pruning + fine-tuning.
  p.prune_runs = PRUNE_RUNS  # Each 'scope:structure:schedule:sparsity'.
  p.finetune_epochs = 2.0  # Fine-tuning length after (during) pruning.
  p.finetune_learning_rate = 0.01  # Peak lr of the cosine fine-tuning.
  p.gradual_end_fraction = 0.75  # Gradual: final sparsity at this fraction.
  p.gradual_update_every = 10  # Gradual: steps between mask updates.
  p.prune_first = False  # Also prune the first conv (conv_init).
  p.prune_last = False  # Also prune the classifier (head).
  # Knowledge distillation: each student with KD and its no-KD control.
  p.kd_students = ("resnet8:8", "resnet8:16")  # 'arch:width'.
  p.kd_temperature = 4.0  # Softmax temperature T.
  p.kd_alpha = 0.9  # Weight of the soft-target (KL) term.
  p.kd_epochs = -1.0  # Student training epochs; -1 = num_epochs.
  # Post-training quantization (AQT).
  p.weight_bits = (8, 4)  # Weight bit widths (per-channel, symmetric).
  p.act_bits = 8  # Activation bits; 0 = float activations.
  p.act_calibration = "static"  # static (calibrated per-tensor) | dynamic.
  p.calib_examples = 1000  # Training images for static calibration.
  p.quantize_pruned = ("global:unstructured:oneshot:0.9",)  # + int8 PTQ.
  if arg.runlocal:
    common.runlocal_overrides(c)
    p.prune_runs = ("global:unstructured:oneshot:0.9",
                    "layerwise:channel:gradual:0.5")
    p.gradual_update_every = 2
    p.kd_students = ("resnet8:4",)
    p.calib_examples = 128
  return c
