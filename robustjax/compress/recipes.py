"""Compression methods as library calls: trained model in, compressed out.

Each function returns a `saved.Compressed` (apply_fn, variables, metadata)
and, with a `workdir`, saves it there (a second call with the same `workdir`
loads it instead of recomputing; fine-tuning runs resume from the trainer's
checkpoints in `workdir/train`). Settings come from `config.compress` (every
field declared once in configs/common.py). Nothing here evaluates a model:
evaluation is the evaluators' job (robustjax.robustness.evaluators).

  base = saved.restore_trained("/tmp/dig")                # a trained run
  m = recipes.prune(base, config, "/tmp/p90", sparsity=0.9)
  m = recipes.distill(teacher, config, "/tmp/kd", arch="resnet8:8")
  m = recipes.quantize(base, config, weight_bits=8)
  m = saved.load("/tmp/p90")                              # later, anywhere

Method names (the same everywhere: rows, metadata, reports): original,
prune, distill, distill_control, quantize; and replicate, a study's
negative control (the original's recipe from another seed,
robustjax/study/grid.py; its saved metadata says original).
"""

import copy
import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional

from absl import logging
import ml_collections
import numpy as np

from robustjax.compress import distillation
from robustjax.compress import pruning
from robustjax.compress import quantization
from robustjax.compress import saved
from robustjax.compress import size as size_lib
from robustjax.data import loader
from robustjax.models import factory
from robustjax.train import trainer

METHODS = ("original", "prune", "distill", "distill_control", "quantize",
           "replicate")


def derived_config(config, **changes) -> ml_collections.ConfigDict:
  """A copy of `config` with `changes` ("a.b" keys) applied."""
  c = copy.deepcopy(config)
  with c.unlocked():
    for key, value in changes.items():
      node = c
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


def _finish(method: str, setting: Dict[str, Any], spec: Dict[str, Any],
            variables, config, workdir: Optional[str], t0: float, *,
            reference, quant=None, sparse_format=None,
            extra=None) -> saved.Compressed:
  """Measures size, writes metadata (+ variables if `workdir`)."""
  variables = saved.to_host(variables)
  metadata = dict(method=method, setting=setting, model=spec,
                  quantization=quant)
  size = size_lib.model_size(
      variables, weight_bits=quant["weight_bits"] if quant else None,
      sparse_format=sparse_format or config.compress.sparse_format,
      reference=reference)
  metadata.update(
      size_bits=size["total_bits"], size_bytes=size["total_bytes"],
      compression_ratio=size["compression_ratio"],
      sparsity=size["weight_sparsity"], size=size,
      seconds=time.time() - t0, **(extra or {}))
  if workdir:
    saved.save(workdir, variables, metadata)
  logging.info("%s %s: %s.", method, setting, size_lib.summary(size))
  return saved.Compressed(saved.apply_fn_for(metadata), variables, metadata)


def original(variables, config, workdir: Optional[str] = None,
             arch: Optional[str] = None) -> saved.Compressed:
  """The uncompressed model (size reference of its compressed versions)."""
  if saved.is_done(workdir):
    return saved.load(workdir)
  return _finish("original", {}, factory.arch_spec(config, arch), variables,
                 config, workdir, time.time(), reference=variables)


@dataclasses.dataclass
class Training:
  """A compression method's training, planned but not run.

  `finish(final_state)` saves and returns the model. Trainings whose configs
  differ only in `seed`, and whose recipes share the model, loss function
  and optimizer update (the originals of one arch; one-shot fine-tunes of
  one arch at any sparsity; the students of one arch and alpha, each with
  its own teacher), can run as one `train_together` group.
  """
  config: ml_collections.ConfigDict
  workdir: str  # The training run's folder (`<model folder>/train`).
  recipe: Optional[trainer.Recipe]
  finish: Callable[[Any], saved.Compressed]

  def run(self) -> saved.Compressed:
    """Trains alone (`trainer.train_and_evaluate`) and finishes."""
    return self.finish(trainer.train_and_evaluate(self.config, self.workdir,
                                                  self.recipe))


def _program_config(config) -> str:
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = 0
  return c.to_json(sort_keys=True)


def train_together(trainings: List[Training], workdir: str
                   ) -> List[saved.Compressed]:
  """Runs `trainings` as one vmapped `trainer.train_members` program.

  Each member ends where its own `Training.run` would, up to float
  reassociation (the members are batched), and is saved the same way.

  Args:
    trainings: trainings whose configs differ only in `seed`.
    workdir: the group's folder (its stacked checkpoints; resumable).

  Returns:
    The finished models, in order.

  Raises:
    ValueError: if the configs differ in more than the seed.
  """
  programs = {_program_config(t.config) for t in trainings}
  if len(programs) > 1:
    raise ValueError("train_together needs trainings whose configs differ "
                     "only in seed; train these one by one (Training.run).")
  states = trainer.train_members(
      [trainer.Member(t.config, t.workdir, t.recipe) for t in trainings],
      workdir)
  return [t.finish(s) for t, s in zip(trainings, states)]


def plan_original(config, workdir: str, arch: Optional[str] = None
                  ) -> Training:
  """The training of `arch` (default: the config's model) as an original."""
  cfg = config if arch is None else with_arch(config, arch)
  return Training(cfg, f"{workdir}/train", None,
                  lambda state: original(state.variables, cfg, workdir, arch))


def train_original(config, workdir: str, arch: Optional[str] = None
                   ) -> saved.Compressed:
  """Trains `arch` (default: the config's model) and saves it as original."""
  if saved.is_done(workdir):
    return saved.load(workdir)
  return plan_original(config, workdir, arch).run()


def with_arch(config, arch: str) -> ml_collections.ConfigDict:
  name, width = factory.parse_arch(arch)
  return derived_config(config, **{"model.name": name, "model.width": width})


def from_config(config) -> Optional[trainer.Recipe]:
  """The recipe `launch/train.py` and sweeps use: `compress.init_sparsity`.

  One-shot global magnitude pruning of the *initial* weights (kernels only,
  first conv and head kept), masks fixed while training; None when dense.
  """
  s = float(config.compress.init_sparsity)
  if not s:
    return None
  return trainer.Recipe(wrap_tx=pruning.magnitude_pruner(s).wrap_tx)


def prune(base_variables, config, workdir: str, *, sparsity: float,
          scope: str = "global", structure: str = "unstructured",
          schedule: str = "oneshot", arch: Optional[str] = None
          ) -> saved.Compressed:
  """Magnitude-prunes a trained model and fine-tunes it with fixed zeros.

  Fine-tuning uses the config's optimizer at `compress.finetune_lr` (cosine,
  no warm-up) for `compress.finetune_epochs`. One-shot: masks from the
  trained weights, fixed. Gradual: Zhu & Gupta from step 0 to
  `compress.gradual_end_fraction` of the steps, masks recomputed every
  `compress.gradual_update_every` steps, for `compress.gradual_epochs` at
  `compress.gradual_lr` (each -1: the one-shot values).

  Args:
    base_variables: trained {"params", "batch_stats"}.
    config: the base model's config.
    workdir: output folder (the fine-tuning run goes to `workdir/train`).
    sparsity: target fraction of prunable weights (filters for "channel").
    scope: "global" | "layerwise".
    structure: "unstructured" | "channel".
    schedule: "oneshot" | "gradual".
    arch: "name:width" of the base (default: the config's model).

  Returns:
    The pruned model.
  """
  if saved.is_done(workdir):
    return saved.load(workdir)
  return plan_prune(base_variables, config, workdir, sparsity=sparsity,
                    scope=scope, structure=structure, schedule=schedule,
                    arch=arch).run()


def plan_prune(base_variables, config, workdir: str, *, sparsity: float,
               scope: str = "global", structure: str = "unstructured",
               schedule: str = "oneshot", arch: Optional[str] = None
               ) -> Training:
  """`prune`'s fine-tuning as a `Training` (same arguments)."""
  t0 = time.time()
  c = config.compress
  cfg = config if arch is None else with_arch(config, arch)
  lr, epochs = float(c.finetune_lr), float(c.finetune_epochs)
  if schedule == "gradual":  # Its own length and lr; -1: the one-shot ones.
    lr = _positive_or(c.get("gradual_lr", -1.0), lr)
    epochs = _positive_or(c.get("gradual_epochs", -1.0), epochs)
  cfg = derived_config(cfg, **{
      "optimizer.learning_rate": lr, "optimizer.warmup_steps": 0,
      "num_epochs": epochs})
  steps = trainer.total_steps(
      cfg, max(1, _train_size(cfg) // cfg.batch_size))
  prunable = pruning.default_prunable(c.prune_first, c.prune_last)
  pruner = pruning.magnitude_pruner(
      sparsity, scope=scope, structure=structure, norm=c.channel_norm,
      schedule=schedule, begin_step=0,
      end_step=max(1, int(round(c.gradual_end_fraction * steps))),
      update_every=int(c.gradual_update_every), prunable=prunable)
  setting = dict(sparsity=float(sparsity), scope=scope,
                 structured=structure == "channel", schedule=schedule)

  def finish(state) -> saved.Compressed:
    report = pruning.sparsity_report(saved.to_host(state.params), prunable)
    report.pop("layers")
    return _finish(
        "prune", setting, factory.arch_spec(cfg), state.variables, config,
        workdir, t0, reference=base_variables,
        # Filter-pruned kernels are stored as their kept filters.
        sparse_format="channel" if structure == "channel" else None,
        extra=dict(prunable_sparsity=report["prunable_sparsity"],
                   sparsity_report=report, pruner=pruner.config,
                   finetune_steps=steps))

  return Training(cfg, f"{workdir}/train", trainer.Recipe(
      init_variables=pruner.prepare(base_variables), wrap_tx=pruner.wrap_tx),
                  finish)


def _positive_or(value, default: float) -> float:
  return float(value) if value > 0 else default


def _train_size(config) -> int:
  return len(loader.load_data(config)[0])


def distill(teacher: saved.Compressed, config, workdir: str, *, arch: str,
            alpha: Optional[float] = None) -> saved.Compressed:
  """Trains a student `arch` from scratch with Hinton KD, or its control.

  `alpha = 0` is the control (method `distill_control`): the same student,
  config and data order, trained with plain cross-entropy and no teacher.
  Temperature, alpha and length come from `compress.kd_*`
  (`kd_epochs = -1`: the config's `num_epochs`).

  Args:
    teacher: the trained teacher (its variables are the size reference).
    config: base config; the student uses its optimizer and data settings.
    workdir: output folder (the training run goes to `workdir/train`).
    arch: the student, "name:width".
    alpha: KD weight (default `compress.kd_alpha`); 0 = control.

  Returns:
    The student.
  """
  if saved.is_done(workdir):
    return saved.load(workdir)
  return plan_distill(teacher, config, workdir, arch=arch, alpha=alpha).run()


def plan_distill(teacher: saved.Compressed, config, workdir: str, *,
                 arch: str, alpha: Optional[float] = None) -> Training:
  """`distill`'s training as a `Training` (same arguments)."""
  t0 = time.time()
  c = config.compress
  temperature = float(c.kd_temperature)
  alpha = float(c.kd_alpha if alpha is None else alpha)
  cfg = with_arch(config, arch)
  if c.kd_epochs > 0:
    cfg = derived_config(cfg, num_epochs=float(c.kd_epochs))
  recipe = None
  if alpha > 0:
    recipe = trainer.Recipe(
        loss_fn=distillation.make_loss_fn(teacher.apply_fn, temperature,
                                          alpha),
        loss_args=teacher.variables)
  setting = dict(alpha=alpha, teacher=teacher.metadata["model"]["name"] +
                 f":{teacher.metadata['model']['width']}" if alpha else None,
                 temperature=temperature if alpha else None)

  def finish(state) -> saved.Compressed:
    return _finish("distill" if alpha else "distill_control", setting,
                   factory.arch_spec(cfg), state.variables, config, workdir,
                   t0, reference=teacher.variables,
                   extra=dict(epochs=float(cfg.num_epochs)))

  return Training(cfg, f"{workdir}/train", recipe, finish)


def calibration_images(train_split, num: int, seed: int = 0,
                       batch: int = 250) -> List[np.ndarray]:
  """`num` training images (seeded choice) as float batches in [0, 1]."""
  num = min(num, len(train_split))
  idx = np.sort(np.random.default_rng(seed).permutation(
      len(train_split))[:num])
  images = train_split.images[idx].astype(np.float32) / 255.0
  return [images[i:i + batch] for i in range(0, num, batch)]


def quantize(base: saved.Compressed, config, workdir: Optional[str] = None,
             *, weight_bits: int = 8, reference=None) -> saved.Compressed:
  """AQT post-training quantization of every conv and dense layer.

  Activation bits, calibration and its example count come from
  `compress.act_bits` (0 = float activations), `compress.act_calibration`,
  `compress.calib_examples`.

  Args:
    base: the float model (may be pruned: zeros stay 0, and its sparse
      format is kept for size accounting).
    config: the model's config.
    workdir: output folder (optional).
    weight_bits: 8 or 4 (per output channel, symmetric).
    reference: size reference (default: `base`'s variables).

  Returns:
    The quantized model; variables hold int8 containers and float32 scales
    in the `quant` collection.
  """
  if saved.is_done(workdir):
    return saved.load(workdir)
  t0 = time.time()
  c = config.compress
  act_bits = int(c.act_bits) or None
  spec = base.metadata["model"]
  calib = None
  if act_bits is not None and c.act_calibration == "static":
    train_split, _ = loader.load_data(config)
    calib = quantization.calibrate(
        lambda **ops: factory.build_from_spec(spec, **ops), base.variables,
        calibration_images(train_split, int(c.calib_examples), config.seed))
  qvars = quantization.convert(base.variables, calib,
                               weight_bits=weight_bits, act_bits=act_bits,
                               act_calibration=c.act_calibration)
  quant = dict(weight_bits=int(weight_bits), act_bits=act_bits,
               act_calibration=c.act_calibration)
  setting = dict(weight_bits=int(weight_bits), activation_bits=act_bits or 32)
  base_format = base.metadata.get("size", {}).get("sparse_format")
  return _finish("quantize", setting, spec, qvars, config, workdir, t0,
                 quant=quant, sparse_format=base_format,
                 reference=base.variables if reference is None else reference,
                 extra=dict(calib_examples=int(c.calib_examples) if calib
                            else 0))
