"""Compression methods as library calls, and `compress_all` over a config.

Each method turns a trained model into a compressed one and returns
`(apply_fn, variables, metadata)`; `apply_fn(variables, images)` is the
suite's one calling convention (images in [0, 1], inference mode), so every
evaluator and attack works on the result. With a `workdir`, the result is
saved there (Orbax `variables/` + `compression.json`, the metadata) and a
second call with the same `workdir` loads it instead of recomputing;
fine-tuning runs resume from the trainer's checkpoints in `workdir/train`.

  base = methods.restore_trained("/tmp/dig")           # a trained workdir
  fn, v, meta = methods.prune_and_finetune(base, config, 0.9, "global", wd)
  fn, v, meta = methods.distill(teacher_fn, base, config, wd, student=...)
  fn, v, meta = methods.quantize(base, config, weight_bits=8, workdir=wd)
  fn, v, meta = methods.load_compressed(wd)             # later, anywhere

`compress_all(config, workdir)` runs every setting of `config.compress`
(see configs/digits_compress.py) and writes `workdir/compressed.json`.
"""

import copy
import functools
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from robustjax import io
from robustjax import models
from robustjax import parallel
from robustjax.compress import distillation
from robustjax.compress import pruning
from robustjax.compress import quantization
from robustjax.compress import size as size_lib
from robustjax.data import registry
from robustjax import checkpoint
from robustjax.train import eval_lib
from robustjax.train import trainer

METADATA = "compression.json"
VARIABLES = "variables"
MANIFEST = "compressed.json"
Result = Tuple[Callable[..., Any], Any, Dict[str, Any]]

# Defaults of `config.compress` (configs/digits_compress.py documents them).
DEFAULTS = dict(
    base_workdir="", finetune_epochs=2.0, finetune_learning_rate=0.01,
    gradual_end_fraction=0.75, gradual_update_every=10, prune_first=False,
    prune_last=False, kd_temperature=4.0, kd_alpha=0.9, kd_epochs=-1.0,
    weight_bits=(8, 4), act_bits=8, act_calibration="static",
    calib_examples=1000, sparse_format="bitmap")


def _setting(config, key: str):
  c = config.get("compress", None)
  if c is not None and key in c:
    return c[key]
  return DEFAULTS[key]


# ----------------------------------------------------------------- models


def model_spec(config, name: Optional[str] = None,
               width: Optional[int] = None) -> Dict[str, Any]:
  """What rebuilds an architecture: {"name", "width", "num_classes",
  "dataset"} (the dataset gives the normalisation statistics)."""
  spec = registry.get_spec(config.dataset.name)
  return dict(name=name or config.model.name,
              width=int(width or config.model.width),
              num_classes=int(spec.num_classes), dataset=config.dataset.name)


def build_model(spec: Dict[str, Any], **kwargs):
  """The module for a `model_spec` (kwargs: e.g. `conv=`, `dense=`)."""
  data = registry.get_spec(spec["dataset"])
  return models.get_model(spec["name"], num_classes=spec["num_classes"],
                          width=spec["width"], mean=data.mean, std=data.std,
                          **kwargs)


def build_apply_fn(metadata: Dict[str, Any]):
  """`apply_fn(variables, images)` for a compressed model's metadata."""
  q = metadata.get("quantization")
  if q:
    ops = dict(conv=quantization.qconv(q["weight_bits"], q["act_bits"],
                                       q["act_calibration"]),
               dense=quantization.qdense(q["weight_bits"], q["act_bits"],
                                         q["act_calibration"]))
  else:
    ops = {}
  return models.inference_fn(build_model(metadata["model"], **ops))


# ------------------------------------------------------ checkpoints / io


def restore_trained(train_workdir: str) -> Dict[str, Any]:
  """{"params", "batch_stats"} of the newest checkpoint of a trainer run."""
  directory = os.path.join(os.path.abspath(train_workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(
        f"No training checkpoint in {directory}. Train the base model first "
        "(python launch/train.py --config=... --workdir=...) and point "
        "config.compress.base_workdir at it, or leave it empty to let "
        "compress_all train one.")
  state = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def save_compressed(workdir: str, variables, metadata: Dict[str, Any]):
  """Writes `variables/` then `compression.json` (last: marks it done)."""
  os.makedirs(workdir, exist_ok=True)
  # Orbax saves are collective (every process calls); metadata: process 0.
  checkpoint.save_variables(os.path.join(workdir, VARIABLES), variables)
  if parallel.is_main_process():
    io.write_json(os.path.join(workdir, METADATA), metadata)


def is_done(workdir: Optional[str]) -> bool:
  return bool(workdir) and os.path.exists(os.path.join(workdir, METADATA))


def load_compressed(workdir: str) -> Result:
  """(apply_fn, variables, metadata) of a model saved by this module."""
  with open(os.path.join(workdir, METADATA)) as f:
    metadata = json.load(f)
  variables = checkpoint.load_variables(os.path.join(workdir, VARIABLES))
  return build_apply_fn(metadata), variables, metadata


# ---------------------------------------------------------------- metrics


def evaluate(apply_fn, variables, config, data=None) -> Dict[str, float]:
  """Accuracy on the config's test split and every target domain."""
  _, evals = data if data is not None else trainer.load_data(config)
  return {name: eval_lib.accuracy(apply_fn, variables, split,
                                  config.eval_batch_size)
          for name, split in evals.items()}


def _finish(name, method, setting, spec, variables, config, workdir, data,
            t0, *, reference, quant=None, extra=None,
            sparse_format=None) -> Result:
  """Evaluates, measures size, writes metadata (+ variables if workdir)."""
  variables = _to_host(variables)
  metadata = dict(name=name, method=method, setting=setting, model=spec,
                  quantization=quant)
  apply_fn = build_apply_fn(metadata)
  size = size_lib.model_size(
      variables, weight_bits=quant["weight_bits"] if quant else None,
      sparse_format=sparse_format or _setting(config, "sparse_format"),
      reference=reference)
  metadata.update(
      accuracy=evaluate(apply_fn, variables, config, data),
      size_bits=size["total_bits"], size_bytes=size["total_bytes"],
      compression_ratio=size["compression_ratio"],
      sparsity=size["weight_sparsity"], size=size,
      path=os.path.abspath(workdir) if workdir else None,
      seconds=time.time() - t0, **(extra or {}))
  if workdir:
    save_compressed(workdir, variables, metadata)
  logging.info("%s: accuracy %s; %s.", name, {
      k: f"{v:.2%}" for k, v in metadata["accuracy"].items()},
               size_lib.summary(size))
  return apply_fn, variables, metadata


def _derived_config(config, **changes) -> ml_collections.ConfigDict:
  """A copy of `config` with `changes` ("a.b" keys) applied, unlocked."""
  c = copy.deepcopy(config)
  with c.unlocked():
    for key, value in changes.items():
      node = c
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


# ---------------------------------------------------------------- pruning


def prune_and_finetune(base_variables, config, sparsity: float,
                       scope: str = "global", workdir: Optional[str] = None,
                       *, structure: str = "unstructured",
                       schedule: str = "oneshot", norm: str = "l1",
                       data=None, name: str = "") -> Result:
  """Magnitude-prunes a trained model and fine-tunes it with fixed zeros.

  Fine-tuning uses the config's optimizer with
  `compress.finetune_learning_rate` (cosine) for `compress.finetune_epochs`.
  One-shot: masks from the base weights, fixed. Gradual: Zhu & Gupta from
  step 0 to `gradual_end_fraction` of the steps, masks recomputed every
  `gradual_update_every` steps.

  Args:
    base_variables: trained {"params", "batch_stats"}.
    config: the base model's config (+ optional `compress` settings).
    sparsity: target fraction of prunable weights (filters for "channel").
    scope: "global" | "layerwise".
    workdir: output folder (trainer run in `workdir/train`); required to
      fine-tune (the trainer checkpoints there).
    structure: "unstructured" | "channel".
    schedule: "oneshot" | "gradual".
    norm: "l1" | "l2" filter norm (channel pruning).
    data: (train split, eval splits) from `trainer.load_data`, to reuse.
    name: label for logs / manifest.

  Returns:
    (apply_fn, variables, metadata).
  """
  if is_done(workdir):
    return load_compressed(workdir)
  if not workdir:
    raise ValueError("prune_and_finetune needs a workdir for fine-tuning.")
  t0 = time.time()
  cfg = _derived_config(
      config, **{"optimizer.learning_rate": float(
          _setting(config, "finetune_learning_rate")),
                 "optimizer.warmup_steps": 0,
                 "num_epochs": float(_setting(config, "finetune_epochs"))})
  data = data or trainer.load_data(cfg)
  steps = trainer.total_steps(cfg, len(data[0]) // cfg.batch_size)
  prunable = pruning.default_prunable(_setting(config, "prune_first"),
                                      _setting(config, "prune_last"))
  pruner = pruning.magnitude_pruner(
      sparsity, scope=scope, structure=structure, norm=norm,
      schedule=schedule, begin_step=0,
      end_step=max(1, int(round(_setting(config, "gradual_end_fraction") *
                                steps))),
      update_every=int(_setting(config, "gradual_update_every")),
      prunable=prunable)
  state = trainer.train_and_evaluate(
      cfg, os.path.join(workdir, "train"),
      hooks=pruner.hooks(init_variables=base_variables))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  report = pruning.sparsity_report(_to_host(state.params), prunable)
  report.pop("layers")
  setting = dict(pruner.config, finetune_steps=steps,
                 finetune_learning_rate=cfg.optimizer.learning_rate)
  return _finish(name or f"prune/{scope}-{structure}-{schedule}-"
                 f"s{sparsity:.2f}", "prune", setting, model_spec(config),
                 variables, config, workdir, data, t0,
                 reference=base_variables,
                 extra=dict(prunable_sparsity=report["prunable_sparsity"],
                            sparsity_report=report),
                 # Filter-pruned kernels are stored as their kept filters.
                 sparse_format="channel" if structure == "channel" else None)


# ----------------------------------------------------------- distillation


def distill(teacher_apply_fn, teacher_variables, config,
            workdir: Optional[str] = None, *, student: Optional[str] = None,
            width: Optional[int] = None, temperature: Optional[float] = None,
            alpha: Optional[float] = None, epochs: Optional[float] = None,
            data=None, name: str = "") -> Result:
  """Trains a student from scratch with Hinton KD (alpha > 0) or plain CE.

  `alpha = 0` is the control: the same student, config and data order,
  trained with the trainer's cross-entropy and no teacher.

  Args:
    teacher_apply_fn: `logits = fn(variables, images)` of the teacher.
    teacher_variables: the trained teacher's variables (also the size
      reference).
    config: base config; the student uses its optimizer and data settings.
    workdir: output folder (trainer run in `workdir/train`).
    student, width: student architecture (default: the config's).
    temperature, alpha: KD settings (default `compress.kd_temperature`,
      `compress.kd_alpha`).
    epochs: student training length (default `compress.kd_epochs`, which
      -1 maps to the config's `num_epochs`).
    data: (train split, eval splits) to reuse.
    name: label for logs / manifest.

  Returns:
    (apply_fn, variables, metadata).
  """
  if is_done(workdir):
    return load_compressed(workdir)
  if not workdir:
    raise ValueError("distill needs a workdir for training.")
  t0 = time.time()
  temperature = float(_setting(config, "kd_temperature")
                      if temperature is None else temperature)
  alpha = float(_setting(config, "kd_alpha") if alpha is None else alpha)
  epochs = float(_setting(config, "kd_epochs") if epochs is None else epochs)
  spec = model_spec(config, student, width)
  changes = {"model.name": spec["name"], "model.width": spec["width"]}
  if epochs > 0:
    changes["num_epochs"] = epochs
  cfg = _derived_config(config, **changes)
  hooks = trainer.Hooks()
  if alpha > 0:
    hooks.loss_fn = distillation.make_loss_fn(
        teacher_apply_fn, teacher_variables, temperature, alpha)
  data = data or trainer.load_data(cfg)
  state = trainer.train_and_evaluate(cfg, os.path.join(workdir, "train"),
                                     hooks=hooks)
  method = "kd" if alpha > 0 else "kd_control"
  setting = dict(student=spec["name"], width=spec["width"],
                 temperature=temperature if alpha > 0 else None, alpha=alpha,
                 epochs=cfg.num_epochs)
  label = (f"T{temperature:g}-a{alpha:g}" if alpha > 0 else "control")
  return _finish(name or f"kd/{spec['name']}-w{spec['width']}-{label}",
                 method, setting, spec,
                 {"params": state.params, "batch_stats": state.batch_stats},
                 config, workdir, data, t0, reference=teacher_variables)


# ----------------------------------------------------------- quantization


def calibration_images(train_split, num: int, seed: int = 0,
                       batch: int = 250) -> List[np.ndarray]:
  """`num` training images (seeded choice) as float batches in [0, 1]."""
  num = min(num, len(train_split))
  idx = np.sort(np.random.default_rng(seed).permutation(
      len(train_split))[:num])
  images = train_split.images[idx].astype(np.float32) / 255.0
  return [images[i:i + batch] for i in range(0, num, batch)]


def quantize(base_variables, config, *, weight_bits: int = 8,
             act_bits: Optional[int] = None, act_calibration: Optional[str]
             = None, calib_examples: Optional[int] = None,
             workdir: Optional[str] = None, spec: Optional[Dict] = None,
             reference=None, data=None, name: str = "",
             extra: Optional[Dict[str, Any]] = None,
             sparse_format: Optional[str] = None) -> Result:
  """AQT post-training quantization of every conv and dense layer.

  Args:
    base_variables: trained float variables (may be pruned: zeros stay 0).
    config: the model's config.
    weight_bits: 8 or 4 (per output channel, symmetric).
    act_bits: activation bits (default `compress.act_bits`, 8); 0 = float.
    act_calibration: "static" | "dynamic" (default
      `compress.act_calibration`).
    calib_examples: training images for static calibration.
    workdir: output folder (optional).
    spec: `model_spec` of the architecture (default: the config's model).
    reference: size reference (default `base_variables`).
    data: (train split, eval splits) to reuse.
    name: label for logs / manifest.
    extra: more metadata fields.
    sparse_format: size accounting of zero weights (default
      `compress.sparse_format`).

  Returns:
    (apply_fn, variables, metadata); variables hold int8 containers and
    float32 scales in the `quant` collection.
  """
  if is_done(workdir):
    return load_compressed(workdir)
  t0 = time.time()
  act_bits = int(_setting(config, "act_bits") if act_bits is None
                 else act_bits) or None
  act_calibration = (act_calibration or _setting(config, "act_calibration"))
  calib_examples = int(calib_examples or _setting(config, "calib_examples"))
  spec = spec or model_spec(config)
  data = data or trainer.load_data(config)
  calib = None
  if act_bits is not None and act_calibration == "static":
    calib = quantization.calibrate(
        functools.partial(build_model, spec), base_variables,
        calibration_images(data[0], calib_examples, config.seed))
  qvars = quantization.convert(base_variables, calib,
                               weight_bits=weight_bits, act_bits=act_bits,
                               act_calibration=act_calibration)
  quant = dict(weight_bits=weight_bits, act_bits=act_bits,
               act_calibration=act_calibration)
  setting = dict(quant, calib_examples=calib_examples if calib else 0)
  label = f"w{weight_bits}a{act_bits or 32}"
  return _finish(name or f"ptq/{label}", "ptq", setting, spec, qvars, config,
                 workdir, data, t0, quant=quant,
                 reference=base_variables if reference is None else reference,
                 extra=extra, sparse_format=sparse_format)


# ------------------------------------------------------------ everything


def original(base_variables, config, workdir: Optional[str] = None,
             data=None) -> Result:
  """The uncompressed base as a manifest entry (method "none")."""
  if is_done(workdir):
    return load_compressed(workdir)
  return _finish("original", "none", {}, model_spec(config), base_variables,
                 config, workdir, data, time.time(),
                 reference=base_variables)


def parse_prune_run(run: str) -> Dict[str, Any]:
  """'global:unstructured:oneshot:0.9' -> keyword arguments."""
  parts = run.split(":")
  if len(parts) != 4:
    raise ValueError(f"Pruning run {run!r} must be "
                     "'scope:structure:schedule:sparsity', e.g. "
                     "'global:unstructured:oneshot:0.9'.")
  scope, structure, schedule, sparsity = parts
  for what, value, valid in (("scope", scope, pruning.SCOPES),
                             ("structure", structure, pruning.STRUCTURES),
                             ("schedule", schedule, pruning.SCHEDULES)):
    if value not in valid:
      raise ValueError(f"Pruning run {run!r}: unknown {what} {value!r}; use "
                       f"one of {', '.join(valid)}.")
  return dict(scope=scope, structure=structure, schedule=schedule,
              sparsity=float(sparsity))


def _entry(metadata: Dict[str, Any]) -> Dict[str, Any]:
  keys = ("name", "method", "setting", "model", "quantization", "path",
          "size_bits", "size_bytes", "compression_ratio", "sparsity",
          "prunable_sparsity", "accuracy", "seconds")
  return {k: metadata.get(k) for k in keys}


def compress_all(config, workdir: str) -> List[Dict[str, Any]]:
  """Every compressed model of `config.compress`, resumable.

  Layout of `workdir`: `base/` (the trained base, unless
  `compress.base_workdir` names one), `original/`, `prune/<run>/`,
  `kd/<student>/`, `ptq/<bits>/`, `ptq_pruned/<run>/`, each with
  `variables/` + `compression.json`, and `compressed.json` (the manifest:
  one entry per model with method, setting, path, size_bits, sparsity and
  accuracy), rewritten after each model. Finished models are skipped on a
  re-run; an interrupted fine-tuning resumes from its checkpoint.

  Args:
    config: a compression config (configs/digits_compress.py).
    workdir: output folder.

  Returns:
    The manifest entries.
  """
  c = config.compress
  t0 = time.time()
  base_dir = c.base_workdir or os.path.join(workdir, "base")
  if not os.path.exists(os.path.join(base_dir, "final_metrics.json")):
    if c.base_workdir:
      raise FileNotFoundError(
          f"compress.base_workdir={c.base_workdir} has no finished training "
          "run (final_metrics.json). Train it first or leave base_workdir "
          "empty to train the base inside the workdir.")
    logging.info("Training the base model in %s.", base_dir)
    trainer.train_and_evaluate(config, base_dir)
  base = _to_host(restore_trained(base_dir))
  data = trainer.load_data(config)
  entries = []
  manifest_path = os.path.join(workdir, MANIFEST)

  def add(result):
    entries.append(_entry(result[2]))
    if parallel.is_main_process():
      io.write_json(manifest_path, dict(
          config=json.loads(config.to_json_best_effort()),
          base_workdir=os.path.abspath(base_dir), models=entries))
    return result

  base_fn, _, _ = add(original(base, config, os.path.join(workdir,
                                                          "original"), data))
  pruned = {}
  for run in c.prune_runs:
    kw = parse_prune_run(run)
    name = (f"prune/{kw['scope']}-{kw['structure']}-{kw['schedule']}-"
            f"s{kw['sparsity']:.2f}")
    pruned[run] = add(prune_and_finetune(
        base, config, workdir=os.path.join(workdir, name), data=data,
        name=name, **kw))
  for student in c.kd_students:
    arch, _, width = student.partition(":")
    width = int(width) if width else None
    for alpha in (float(c.kd_alpha), 0.0):
      label = (f"T{float(c.kd_temperature):g}-a{alpha:g}" if alpha
               else "control")
      name = f"kd/{arch}-w{width or config.model.width}-{label}"
      add(distill(base_fn, base, config, os.path.join(workdir, name),
                  student=arch, width=width, alpha=alpha, data=data,
                  name=name))
  for bits in c.weight_bits:
    name = f"ptq/w{bits}a{c.act_bits or 32}"
    add(quantize(base, config, weight_bits=int(bits),
                 workdir=os.path.join(workdir, name), data=data, name=name))
  for run in c.quantize_pruned:
    if run not in pruned:
      raise ValueError(f"compress.quantize_pruned names {run!r}, which is "
                       "not in compress.prune_runs.")
    _, pvars, pmeta = pruned[run]
    name = f"ptq_pruned/{pmeta['name'].split('/', 1)[1]}-w8a{c.act_bits or 32}"
    add(quantize(pvars, config, weight_bits=8,
                 workdir=os.path.join(workdir, name), reference=base,
                 data=data, name=name, extra=dict(pruned_from=pmeta["name"]),
                 sparse_format=pmeta["size"]["sparse_format"]))
  logging.info("compress_all: %d models in %.0f s; manifest %s.",
               len(entries), time.time() - t0, manifest_path)
  return entries
