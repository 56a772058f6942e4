"""Shared config pieces: typed `file.py:key=value` arguments and the base.

Every experiment config is `get_config(arg=None)` in its own file. The part
after the colon of `--config=configs/x.py:model=resnet20,runlocal` reaches
`get_config` as a string; `parse_arg` turns it into typed values and rejects
keys the config does not declare.
"""

import ast
from typing import Any

import ml_collections



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
  """Every field any launcher reads, with its default and a comment.

  Variants (one file per experiment) edit fields; nothing may be added
  (configs are locked at the launcher), so a misspelt or unused field fails
  loudly instead of being ignored. configs/validation.py checks the values.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0  # PRNG seed: init, data order, augmentation, attacks.
  c.study_name = ""  # Title of the study report.

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
  c.dataset.allow_partial = False  # Use fewer images than published (smoke).

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet8"  # Registry name (robustjax.models.MODELS).
  c.model.width = 16  # Channels of the first stage.
  c.model.init = ""  # Pretrained weights (.safetensors/.pth/orbax); "".
  # "{name}" in it stands for the model name (a study of several archs).
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
  c.eval_batch_size = 500  # Evaluation batch size (during training).
  c.num_epochs = 8.0  # Training length in epochs ...
  c.num_train_steps = -1  # ... or in steps, if > 0.
  c.label_smoothing = 0.0  # Cross-entropy label smoothing.
  c.split_train_step = False  # The train step as two programs (gradients,
  # then the optimizer update): a model and its pruning fine-tunes share
  # the gradient program, so a process that trains several models of one
  # architecture briefly (the default study) compiles less; the same
  # numbers, at a cost in step time on CPU.
  c.log_every_steps = 50  # Train-metric logging period.
  # Eval period; -1 = every epoch, 0 = at the end, -2 = never (studies
  # evaluate their models themselves).
  c.eval_every_steps = -1
  c.checkpoint_every_steps = 200  # Checkpoint period (and at the end); 0 =
  # none (the study saves its finished models itself).
  # Also checkpoint once this many seconds have passed since the last save,
  # and on SIGTERM/SIGINT in a study; 0 = off. A study's trainings use this
  # one only, so that a preempted training resumes mid-way.
  c.checkpoint_every_secs = 600.0
  c.keep_checkpoints = 2  # Checkpoints kept by the manager.

  c.compress = compress_block()  # How each compression method runs.
  c.study = study_block()  # The grid of models (launch/study.py, compress.py).
  c.evals = evals_block()  # The shifts (study, evaluate, and training evals).
  c.sweep = ml_collections.ConfigDict()  # launch/sweep.py runner options.
  c.sweep.vmap = True  # Train points differing in seed/init_sparsity at once.
  c.sweep.max_models = 8  # Models per vmapped program (memory bound).
  return c


def compress_block() -> ml_collections.ConfigDict:
  """Settings of the compression methods (robustjax/compress/recipes.py)."""
  p = ml_collections.ConfigDict()
  p.init_sparsity = 0.0  # train.py/sweeps: prune the initial weights; 0 = dense.
  p.sparse_format = "bitmap"  # Size accounting of zeros: bitmap|csr|channel.
  p.finetune_epochs = 2.0  # Fine-tuning length after (during) pruning.
  p.finetune_lr = 0.01  # Peak (cosine) learning rate of fine-tuning.
  p.gradual_end_fraction = 0.75  # Gradual: final sparsity at this fraction.
  p.gradual_update_every = 10  # Gradual: steps between mask updates.
  p.gradual_epochs = -1.0  # Gradual: fine-tune length; -1 = finetune_epochs.
  p.gradual_lr = -1.0  # Gradual: peak fine-tuning lr; -1 = finetune_lr.
  p.channel_norm = "l1"  # Filter ranking of channel pruning: l1 | l2.
  p.prune_first = False  # Also prune the first conv (conv_init).
  p.prune_last = False  # Also prune the classifier (head).
  p.kd_temperature = 4.0  # Distillation softmax temperature T.
  p.kd_alpha = 0.9  # Weight of the soft-target (KL) term.
  p.kd_epochs = -1.0  # Student training epochs; -1 = num_epochs.
  p.act_bits = 8  # PTQ activation bits; 0 = float activations.
  p.act_calibration = "static"  # static (calibrated per-tensor) | dynamic.
  p.calib_examples = 1000  # Training images for static calibration.
  return p


def evals_block() -> ml_collections.ConfigDict:
  """The shifts every model is evaluated on (robustness/evaluators/)."""
  e = ml_collections.ConfigDict()
  e.clean = True  # Source-domain test accuracy.
  e.domain = True  # Accuracy on every target domain.
  e.batch_size = 500  # Examples per compiled evaluation batch.
  e.corruptions = ml_collections.ConfigDict()
  e.corruptions.names = ()  # Corruption names, or "benchmark" for the 15
  # of Hendrycks & Dietterich (robustness/corruptions/); () = none.
  e.corruptions.severities = (1, 2, 3, 4, 5)  # Severity levels (1-5).
  e.corruptions.table = "cifar"  # Severity table: cifar | imagenet.
  e.corruptions.max_examples = 500  # First N source-test images; -1 = all.
  e.attacks = ml_collections.ConfigDict()
  e.attacks.names = ()  # fgsm | pgd_linf | pgd_l2; () = none.
  e.attacks.eps = (0.0,)  # Budgets in pixel units ([0, 1] scale), >= 0.
  e.attacks.steps = 10  # PGD iterations.
  e.attacks.restarts = 1  # PGD restarts (worst case kept per example).
  e.attacks.max_examples = 200  # First N source-test images; -1 = all.
  e.attacks.chunk_size = 200  # Examples per attack chunk (memory bound).
  e.attacks.staged = False  # Attack as start + step programs looped on the
  # host: compiles about one step instead of `steps`, and FGSM and PGD-Linf
  # share it; each chunk runs slower, so it pays when a model is attacked in
  # a chunk or two.
  e.attacks.transfer = True  # Study: also attack compressed models with
  # examples crafted on their float original (gradient-masking check).
  e.datasets = ml_collections.ConfigDict()  # Shifts from another dataset's
  # files (robustness/evaluators/dataset.py), rows named "<dataset>/...".
  e.datasets.name = ""  # Registry name, e.g. cifar10_corrupted; "" = none.
  e.datasets.domains = ()  # Its domains (tfds configs); () = all.
  e.datasets.split = "test"  # Split read of each domain.
  e.datasets.max_examples = -1  # First N of each domain; -1 = all.
  e.datasets.as_corruption = False  # Domains are corruption levels: rows
  # shift=corruption, name=<dataset>/<corruption>, level=severity.
  e.level_map = "auto"  # Levels: vmap | map | auto (map on CPU).
  e.half_precision = False  # Evaluate float models in bfloat16 (PTQ
  # models keep their float32 simulation); accelerators.
  return e


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



def study_block() -> ml_collections.ConfigDict:
  """The grid of the study (see robustjax/study/grid.py)."""
  s = ml_collections.ConfigDict()
  s.archs = ("resnet8:16",)  # "name:width", smallest to largest.
  s.seeds = 1  # Replicates: every model once per seed (seed*1000 + r).
  s.prune = ml_collections.ConfigDict()
  s.prune.sparsities = (0.5, 0.75, 0.9)  # Unstructured sparsities.
  s.prune.scopes = ("global",)  # global | layerwise.
  s.prune.schedules = ("oneshot",)  # oneshot | gradual.
  s.prune.structured = ()  # Channel (filter) pruning sparsities.
  s.prune.match_sizes = False  # Add size-matched sparsities (claims b-d).
  s.prune.gradual_above = 1.0  # One-shot models above this sparsity are
  # pruned gradually instead (compress.gradual_*); 1.0 = never.
  s.distill = ml_collections.ConfigDict()
  s.distill.teacher = ""  # An arch of `archs`; "" = no distillation.
  s.distill.students = ()  # Student archs ("name:width").
  s.quantize = ml_collections.ConfigDict()
  s.quantize.weight_bits = (8, 4)  # PTQ weight bit widths.
  s.quantize.archs = ()  # Archs that get PTQ models; () = every arch.
  s.quantize.pruned = ()  # Global sparsities whose pruned model gets int8.
  s.negative_control = ""  # An arch of `archs` retrained from another
  # seed (model "<arch>/replicate", method replicate); "" = none.
  s.notes = ()  # Lines the report shows under its title (e.g. warnings).
  s.grouped = "auto"  # auto | on | off: train the models that share one
  # program (robustjax/study/grouped.py) as one vmapped group and evaluate
  # a seed's models of one arch together; auto = on for GPU/TPU, off on CPU.
  s.claims = ml_collections.ConfigDict()  # How the claims are decided.
  s.claims.alpha = 0.05  # Family-wise error rate of the primary verdicts.
  s.claims.primary = ("domain", "adversarial")  # Primary shifts (the
  # paper's two shift types); the other shifts are secondary.
  s.claims.max_clean_drop = 0.05  # Models whose seed-mean clean accuracy is
  # more than this below their original's are left out of the claims.
  s.claims.equivalence_margin = 0.02  # TOST margin in chance-corrected R
  # for "int8 PTQ is reliable" (equivalent to its original).
  return s


def compression_grid(c: ml_collections.ConfigDict, archs, teacher: str,
                     students, seeds: int = 3, quantize_archs=()) -> None:
  """The default study's compression grid (configs/default.py) on `archs`.

  Every model once per seed; global unstructured magnitude pruning at 75 %
  plus the size-matched sparsities the claims need (robustjax/study/grid.py);
  AQT post-training quantization int8 and int4; distillation `teacher` ->
  each student, with its no-KD control. Training lengths and learning rates
  stay the caller's (they depend on the data).

  Args:
    c: the config to change.
    archs: "name:width" strings, smallest to largest.
    teacher: one of `archs`, or "" for no distillation.
    students: "name:width" strings.
    seeds: replicates of every model.
    quantize_archs: archs that get the PTQ models (and the pruned models
      matched to their sizes); () = every arch.
  """
  c.study.archs = tuple(archs)
  c.study.quantize.archs = tuple(quantize_archs)
  c.study.seeds = seeds
  c.study.prune.sparsities = (0.75,)
  c.study.prune.match_sizes = True
  c.study.distill.teacher = teacher
  c.study.distill.students = tuple(students)
  c.study.quantize.weight_bits = (8, 4)


def runlocal_study(c: ml_collections.ConfigDict, archs, teacher: str = "",
                   students=(), seeds: int = 1) -> None:
  """Shrinks a study's grid and shifts to a CPU smoke run (`runlocal`).

  With `runlocal_overrides` (training) it makes the studies' smoke mode: a
  grid of one sparsity (90 %), int8 PTQ, the given distillation and (where
  the full grid has one) the negative control on the largest of `archs`,
  short fine-tuning, two corruptions on 64 images and attacks at eps 0 and
  the config's largest eps on 32 images.
  """
  c.study.archs = tuple(archs)
  c.study.seeds = seeds
  c.study.prune.sparsities = (0.9,)
  c.study.prune.match_sizes = False
  c.study.quantize.weight_bits = (8,)
  c.study.quantize.archs = ()
  c.study.distill.teacher = teacher
  c.study.distill.students = tuple(students)
  if c.study.negative_control:  # Kept, on the largest smoke arch.
    c.study.negative_control = archs[-1]
  c.compress.finetune_epochs = 0.25
  c.compress.kd_epochs = 0.5
  c.evals.corruptions.names = ("gaussian_noise", "contrast")
  c.evals.corruptions.max_examples = 64
  c.evals.attacks.eps = (0.0, max(c.evals.attacks.eps))
  c.evals.attacks.steps = 3
  c.evals.attacks.max_examples = 32


def runlocal_overrides(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a CPU smoke run (a few steps on a few examples)."""
  c.dataset.max_train_examples = 256
  c.dataset.max_eval_examples = 128
  c.dataset.allow_partial = True  # Small generated folders smoke-run too.
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 8
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 4
