"""Shared config pieces: typed `file.py:key=value` arguments and the base.

Every experiment config is `get_config(arg=None)` in its own file. The part
after the colon of `--config=configs/x.py:model=resnet20,runlocal` reaches
`get_config` as a string; `parse_arg` turns it into typed values and rejects
keys the config does not declare.
"""

import ast
from typing import Any

import ml_collections

from robustjax.robustness import evaluate


def _typed(value: str, default: Any):
  """Converts the string `value` to the type of `default`."""
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", ""):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"Expected a boolean, got {value!r}.")
  if isinstance(default, (int, float)) and not isinstance(default, bool):
    try:
      number = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      number = None
    if (isinstance(number, bool) or not isinstance(number, (int, float)) or
        (isinstance(default, int) and not float(number).is_integer())):
      kind = "an integer" if isinstance(default, int) else "a number"
      raise ValueError(f"Expected {kind}, got {value!r}.")
    return type(default)(number)
  if isinstance(default, (tuple, list)):
    return tuple(v for v in value.split("+") if v)
  return value


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses `key=value,flag` into a ConfigDict typed after `spec`'s defaults.

  Args:
    arg: the string after the colon of `--config=file.py:...`, or None.
      Values are separated by commas; a bare key sets a boolean to True;
      tuples are written `a+b+c`.
    **spec: every accepted key with its default value (the type is taken from
      the default).

  Returns:
    A ConfigDict with all keys of `spec`.

  Raises:
    ValueError: for a key not in `spec`, naming the accepted keys.
  """
  result = ml_collections.ConfigDict(dict(spec))
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    key = key.strip()
    if key not in spec:
      raise ValueError(
          f"Unknown config argument {key!r} in {arg!r}. This config accepts: "
          f"{', '.join(sorted(spec))}. Write them after the file name, e.g. "
          "--config=configs/digits_resnet.py:runlocal.")
    try:
      result[key] = _typed(value, spec[key]) if "=" in part else True
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"Config argument {key}={value!r}: {e}") from None
  return result


def get_base_config() -> ml_collections.ConfigDict:
  """Every field a training run reads, with its default. Variants edit it."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # PRNG seed: init, data order, augmentation, attacks.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits"  # Registry name (robustjax.data.DATASETS).
  c.dataset.source = ""  # Source domain; "" = the dataset's first domain.
  c.dataset.targets = ()  # Target domains evaluated for domain shift.
  c.dataset.train_split = "train"  # Split of the source domain to train on.
  c.dataset.test_split = "test"  # Split of the source domain to test on.
  c.dataset.target_split = "test"  # Split of each target domain to test on.
  c.dataset.image_size = 16  # Common resolution (height = width).
  c.dataset.data_dir = ""  # tfds data dir; "" = $TFDS_DATA_DIR or ~/...
  c.dataset.manual_dir = ""  # Manual downloads (Office-31); "" = default.
  c.dataset.max_train_examples = -1  # Truncate splits (smoke runs); -1 = all.
  c.dataset.max_eval_examples = -1  # Same for the test / target splits.
  c.dataset.crop_padding = 0  # Random-crop augmentation padding in px.
  c.dataset.flip = False  # Random horizontal flips.

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet8"  # Registry name (robustjax.models.MODELS).
  c.model.width = 16  # Channels of the first stage.
  c.model.init = ""  # Pretrained weights (.safetensors/.pth/orbax); "".
  c.model.half_precision = False  # bfloat16 compute (accelerators).

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # sgd | adam | adamw.
  c.optimizer.learning_rate = 0.1  # Peak learning rate.
  c.optimizer.momentum = 0.9  # SGD momentum (Adam b1).
  c.optimizer.nesterov = True  # Nesterov momentum for SGD.
  c.optimizer.weight_decay = 5e-4  # L2 on kernels (decoupled for adamw).
  c.optimizer.schedule = "cosine"  # cosine | constant | step.
  c.optimizer.warmup_steps = 0  # Linear warm-up steps.
  c.optimizer.grad_clip_norm = 0.0  # Global-norm clipping; 0 = off.

  c.batch_size = 64  # Global training batch size.
  c.eval_batch_size = 500  # Evaluation batch size.
  c.num_epochs = 8.0  # Training length in epochs ...
  c.num_train_steps = -1  # ... or in steps, if > 0.
  c.label_smoothing = 0.0  # Cross-entropy label smoothing.
  c.log_every_steps = 50  # Train-metric logging period.
  c.eval_every_steps = -1  # Evaluation period; -1 = every epoch.
  c.checkpoint_every_steps = 200  # Checkpoint period (and at the end).
  c.keep_checkpoints = 2  # Checkpoints kept by the manager.
  # Shifts for launch/evaluate.py and the study (robustness/evaluate.py).
  c.evals = evaluate.default_evals()
  return c


def digits_config(model: str = "resnet20", width: int = 16,
                  epochs: float = 8.0) -> ml_collections.ConfigDict:
  """The base config on the embedded digits data (MNIST-5k -> UCI, 16 px)."""
  c = get_base_config()
  c.dataset.name = "digits"
  c.dataset.source = "mnist"
  c.dataset.targets = ("uci",)
  c.dataset.image_size = 16
  c.model.name = model
  c.model.width = width
  c.batch_size = 64
  c.num_epochs = epochs
  c.checkpoint_every_steps = 100
  return c


# The 15 benchmark corruptions of Hendrycks & Dietterich (2019).
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression")


def study_block() -> ml_collections.ConfigDict:
  """The `study` block (the grid; see robustjax/study/grid.py)."""
  s = ml_collections.ConfigDict()
  s.archs = ("resnet8:16",)  # "name:width", smallest to largest.
  s.prune = ml_collections.ConfigDict()
  s.prune.sparsities = (0.5, 0.75, 0.9)  # Unstructured sparsities.
  s.prune.scopes = ("global",)  # global | layerwise.
  s.prune.structured = ()  # Channel (filter) pruning sparsities.
  s.prune.finetune_epochs = 2.0  # Fine-tuning after one-shot pruning.
  s.prune.finetune_lr = 0.01  # Peak (cosine) learning rate of fine-tuning.
  s.distill = ml_collections.ConfigDict()
  s.distill.teacher = ""  # An arch of `archs`; "" = no distillation.
  s.distill.students = ()  # Student archs ("name:width").
  s.distill.temperature = 4.0  # KD temperature T.
  s.distill.alpha = 0.9  # Weight of the KD term (1 - alpha: CE).
  s.distill.epochs = 8.0  # Student training length.
  s.quantize = ml_collections.ConfigDict()
  s.quantize.weight_bits = (8, 4)  # PTQ weight bit widths.
  s.quantize.activation_bits = 8  # PTQ activation bits.
  return s


def runlocal_overrides(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a CPU smoke run (a few steps on a few examples)."""
  c.dataset.max_train_examples = 256
  c.dataset.max_eval_examples = 128
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 8
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 4
