"""What each value of a config may be, checked without the library.

`validate(config)` checks types, ranges and the fields that refer to each
other (the study's teacher is one of its archs, ...); the names a config
gives (dataset, models, attacks, corruptions) are checked by the library's
registries (robustjax/study/config_checks.py). The launchers call both right
after loading the config, so a bad value ends the run with one sentence
naming the field, the value and what is valid, before any work starts.
"""

import math
from typing import Any

import ml_collections


def _fail(field: str, value: Any, valid: str) -> None:
  raise ValueError(f"config.{field}={value!r} is not valid: {valid}.")


def _positive(c, *fields, allow_minus_one=False):
  for field in fields:
    value = c
    for part in field.split("."):
      value = value[part]
    ok = value > 0 or (allow_minus_one and value == -1)
    if not ok or not math.isfinite(value):
      _fail(field, value, "use a positive number" +
            (" (or -1 for all)" if allow_minus_one else ""))


def _validate_study_extras(c: ml_collections.ConfigDict) -> None:
  """Gradual pruning above a sparsity, the negative control, the claims."""
  for field, same_as in (("gradual_epochs", "finetune_epochs"),
                         ("gradual_lr", "finetune_lr")):
    value = c.compress[field]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        not (value > 0 or value == -1) or not math.isfinite(value)):
      _fail(f"compress.{field}", value, "use a positive number, or -1 for "
            f"compress.{same_as}")
  above = c.study.prune.gradual_above
  if (isinstance(above, bool) or not isinstance(above, (int, float)) or
      not 0.0 <= above <= 1.0):
    _fail("study.prune.gradual_above", above, "a sparsity in [0, 1] (1.0 = "
          "every model keeps its listed schedule)")
  if c.study.grouped not in ("auto", "on", "off"):
    _fail("study.grouped", c.study.grouped, "auto, on or off")
  control = c.study.negative_control
  if not isinstance(control, str) or (control and
                                      control not in c.study.archs):
    _fail("study.negative_control", control, "use one of study.archs "
          f"{tuple(c.study.archs)} (its original is retrained from another "
          "seed as the negative control), or '' for none")
  claims = c.study.claims
  if (isinstance(claims.alpha, bool) or
      not isinstance(claims.alpha, (int, float)) or
      not 0.0 < claims.alpha < 1.0):
    _fail("study.claims.alpha", claims.alpha, "a family-wise error rate in "
          "(0, 1), e.g. 0.05")
  shifts = ("domain", "corruption", "adversarial")
  primary = claims.primary
  if (isinstance(primary, str) or not primary or
      any(p not in shifts for p in primary) or
      len(set(primary)) != len(primary)):
    _fail("study.claims.primary", primary, "a non-empty tuple of distinct "
          f"shift types from {', '.join(shifts)}")
  for field, value, open_ends, valid in (
      ("max_clean_drop", claims.max_clean_drop, False, "an accuracy "
       "difference in [0, 1], e.g. 0.05 (5 points)"),
      ("equivalence_margin", claims.equivalence_margin, True, "a margin in "
       "chance-corrected R in (0, 1), e.g. 0.02")):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        not 0.0 <= value <= 1.0 or (open_ends and value in (0.0, 1.0))):
      _fail(f"study.claims.{field}", value, valid)


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every value of a config on its own (see the module docstring).

  Each problem raises a ValueError of one sentence naming the field, the
  value and what is valid.

  Args:
    c: a config built on `get_base_config`.

  Returns:
    `c`, unchanged.
  """
  _positive(c, "batch_size", "eval_batch_size", "dataset.image_size",
            "model.width", "log_every_steps", "keep_checkpoints",
            "optimizer.learning_rate", "compress.calib_examples",
            "compress.gradual_update_every", "compress.finetune_lr",
            "sweep.max_models", "study.seeds")
  if (not isinstance(c.checkpoint_every_steps, int) or
      c.checkpoint_every_steps < 0):
    _fail("checkpoint_every_steps", c.checkpoint_every_steps,
          "use a positive step count, or 0 for no training checkpoints")
  secs = c.checkpoint_every_secs
  if (isinstance(secs, bool) or not isinstance(secs, (int, float)) or
      not math.isfinite(secs) or secs < 0):
    _fail("checkpoint_every_secs", secs, "use a number of seconds >= 0, "
          "e.g. 600, or 0 for no time-based checkpoints")
  if not isinstance(c.eval_every_steps, int) or c.eval_every_steps < -2:
    _fail("eval_every_steps", c.eval_every_steps,
          "use a positive step count, -1 (every epoch), 0 (at the end) or "
          "-2 (never)")
  _positive(c, "dataset.max_train_examples", "dataset.max_eval_examples",
            allow_minus_one=True)
  if not isinstance(c.split_train_step, bool):
    _fail("split_train_step", c.split_train_step, "use True or False")
  if c.num_train_steps <= 0 and not c.num_epochs > 0:
    _fail("num_epochs", c.num_epochs, "use a positive number of epochs or "
          "set num_train_steps > 0")
  for field, value, valid in (
      ("optimizer.name", c.optimizer.name, ("sgd", "adam", "adamw")),
      ("optimizer.schedule", c.optimizer.schedule,
       ("cosine", "constant", "step")),
      ("compress.sparse_format", c.compress.sparse_format,
       ("bitmap", "csr", "channel")),
      ("compress.channel_norm", c.compress.channel_norm, ("l1", "l2")),
      ("compress.act_calibration", c.compress.act_calibration,
       ("static", "dynamic"))):
    if value not in valid:
      _fail(field, value, f"use one of {', '.join(valid)}")
  if c.compress.act_bits != 0 and not 2 <= c.compress.act_bits <= 8:
    _fail("compress.act_bits", c.compress.act_bits,
          "AQT quantizes activations to 2..8 bits (or 0 = float)")
  for bits in c.study.quantize.weight_bits:
    if not isinstance(bits, int) or not 2 <= bits <= 8:
      _fail("study.quantize.weight_bits", tuple(c.study.quantize.weight_bits),
            "AQT quantizes weights to 2..8 bits, e.g. (8, 4)")
  s0 = c.compress.init_sparsity
  if not isinstance(s0, (int, float)) or not 0.0 <= s0 < 1.0:
    _fail("compress.init_sparsity", s0, "a sparsity is a number in [0, 1)")
  sparsities = (("study.prune.sparsities", c.study.prune.sparsities),
                ("study.prune.structured", c.study.prune.structured),
                ("study.quantize.pruned", c.study.quantize.pruned))
  for field, values in sparsities:
    if isinstance(values, str) or any(
        not isinstance(v, (int, float)) or not 0.0 <= v < 1.0 for v in values):
      _fail(field, values, "sparsities are numbers in [0, 1)")
  for field, values, valid in (
      ("study.prune.scopes", c.study.prune.scopes, ("global", "layerwise")),
      ("study.prune.schedules", c.study.prune.schedules,
       ("oneshot", "gradual"))):
    if isinstance(values, str) or any(v not in valid for v in values):
      _fail(field, values, f"a tuple of names from {', '.join(valid)}")
  for field, archs in (("study.archs", c.study.archs),
                       ("study.distill.students", c.study.distill.students)):
    if isinstance(archs, str) or not all(isinstance(a, str) for a in archs):
      _fail(field, archs, "a tuple of 'name:width' strings, e.g. "
            "('resnet20:16',)")
  q_archs = c.study.quantize.archs
  if isinstance(q_archs, str) or any(a not in c.study.archs for a in q_archs):
    _fail("study.quantize.archs", q_archs,
          f"a tuple of archs from study.archs {tuple(c.study.archs)} (or () "
          "for all of them)")
  teacher = c.study.distill.teacher
  if teacher and teacher not in c.study.archs:
    _fail("study.distill.teacher", teacher,
          f"it must be one of study.archs {tuple(c.study.archs)}")
  names = {a.partition(":")[0] for a in
           tuple(c.study.archs) + tuple(c.study.distill.students)}
  if c.model.init and len(names) > 1 and "{name}" not in c.model.init:
    _fail("model.init", c.model.init, "the study trains "
          f"{', '.join(sorted(names))}, which one file cannot initialise; "
          "write {name} for the model name, e.g. /w/{name}.safetensors")
  if isinstance(c.study.notes, str):
    _fail("study.notes", c.study.notes, "a tuple of lines")
  _validate_study_extras(c)
  return c
