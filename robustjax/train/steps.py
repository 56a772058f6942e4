"""The train step, and the compiled programs that trainings share.

`gradients`, `apply_gradients` and `train_step` are pure functions of the
training state and one batch. `shared_train_step` jits them as the trainer
runs them, through one cache keyed on what a program depends on: a study
trains many models of one architecture and method (seeds, sparsities,
lengths), and a fresh `jax.jit` per training would trace, lower and load
the same program again each time.

A key holds everything a program is built from: the module (Linen modules
compare by value), the loss, the augmentation, stacking, the mesh, the
XLA:CPU options, the optimizer config and the recipe's optimizer wrapper.
Objects that enter a key compare as Python objects, so their factories
return one object per argument set (`same_object_for_same_args`, which
keeps them in the same cache), and a wrapper whose update does not depend
on its settings says so with `set_program_key`. The training length is an
argument of the program (the schedule reads it), not part of the key.
"""

import collections
import functools
from typing import Any, Callable, Optional, TypeVar

from absl import logging
import jax
import jax.numpy as jnp
import optax

from robustjax import cpu_setup
from robustjax import parallel
from robustjax.data import pipeline
from robustjax.models import batched
from robustjax.models import factory

# (logits, labels, images, loss_args) -> scalar loss.
LossFn = Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]
F = TypeVar("F", bound=Callable)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def _default_loss(logits, labels, images, loss_args, label_smoothing):
  del images, loss_args
  return cross_entropy(logits, labels, label_smoothing)


def gradients(state, images, labels, loss_args, *, model, loss_fn,
              crop_padding, flip):
  """The loss gradients of one batch: (grads, new batch_stats, metrics).

  Reads `state`'s params, batch_stats, rng and step only (the trainer
  passes it with `opt_state=None`, so one compiled program serves every
  optimizer and pruning wrapper of a model).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  x = pipeline.augment(pipeline.to_float(images), rng, crop_padding, flip)

  def loss_and_aux(params):
    logits, new_vars = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])
    return loss_fn(logits, labels, x, loss_args), (logits,
                                                    new_vars["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_and_aux, has_aux=True)(state.params)
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
  return grads, batch_stats, metrics


def apply_gradients(state, grads, batch_stats, metrics, total_steps=None, *,
                    tx):
  """The optimizer update of `gradients`' output: (new_state, metrics).

  `total_steps` (an int32 scalar, optional) is the training length the
  learning-rate schedule follows (`optim.make`); passed as an argument, it
  lets trainings of different lengths share one compiled update. Adds
  `metrics["finite"]`: 1.0 when the loss and the updated params are finite.
  """
  extra = {} if total_steps is None else {"total_steps": total_steps}
  updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                 **extra)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  # The loss was computed before this update: also check the updated params,
  # so a non-finite update is caught before it can be checkpointed. One
  # reduction over all leaves (concatenated): a reduction per leaf would add
  # a small fusion per leaf to compile.
  finite = jnp.isfinite(metrics["loss"]) & jnp.all(jnp.isfinite(
      jnp.concatenate([jnp.ravel(p) for p in jax.tree.leaves(params)])))
  return new_state, dict(metrics, finite=finite.astype(jnp.float32))


def train_step(state, images, labels, loss_args, total_steps=None, *, model,
               tx, loss_fn, crop_padding, flip):
  """One optimizer update; returns (new_state, metrics).

  `gradients` then `apply_gradients`; jitted as one program it gives the
  same numbers, bit for bit on XLA:CPU, as the two jitted apart
  (`config.split_train_step`).
  """
  grads, batch_stats, metrics = gradients(
      state, images, labels, loss_args, model=model, loss_fn=loss_fn,
      crop_padding=crop_padding, flip=flip)
  return apply_gradients(state, grads, batch_stats, metrics, total_steps,
                         tx=tx)


# The cache: jitted programs, and the objects their keys hold, by key;
# least recently used first.
_CACHE = collections.OrderedDict()
_MAX_ENTRIES = 128


def shared(key, build: Callable[[], Any]) -> Any:
  """`build()`, or what an earlier call built for an equal key.

  An unhashable key gets a fresh `build()`: correct, only not shared.
  """
  try:
    hash(key)
  except TypeError:
    return build()
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  if len(_CACHE) >= _MAX_ENTRIES:
    _CACHE.popitem(last=False)
  _CACHE[key] = value = build()
  return value


def clear_cache() -> None:
  """Forgets every shared program and object (the next ones are fresh)."""
  _CACHE.clear()


def same_object_for_same_args(factory_fn: F) -> F:
  """Decorator: `factory_fn` returns one object per argument set.

  For factories of objects that enter a program's key (a `Recipe`'s
  `wrap_tx` and `loss_fn`, a jitted calibration pass), so that trainings
  with the same settings share one program. Kept in the `shared` cache;
  unhashable arguments (e.g. a list) give a fresh object.
  """

  @functools.wraps(factory_fn)
  def wrapper(*args, **kwargs):
    key = (factory_fn, args, tuple(sorted(kwargs.items())))
    return shared(key, lambda: factory_fn(*args, **kwargs))

  return wrapper


def set_program_key(wrap_tx: Callable, key) -> Callable:
  """Declares that `wrap_tx`'s update program is the same for equal `key`s.

  For an optimizer wrapper (`Recipe.wrap_tx`) whose update does not depend
  on its settings (one-shot pruning: the masks are in the optimizer state),
  so that trainings with different settings share one program. The wrapped
  transformation must pass optax's extra arguments (`total_steps`) to the
  one it wraps. A wrapper without a key is compared as a Python object,
  and its program is also keyed on the training length (it might build the
  length into the program).

  Returns:
    `wrap_tx`, marked.
  """
  wrap_tx.program_key = key
  return wrap_tx


def shared_train_step(model, config, num_steps: int, tx, mesh, *,
                      loss_fn: Optional[LossFn] = None,
                      wrap_tx: Optional[Callable] = None,
                      stacked: bool = False,
                      batch_axis: Optional[int] = None,
                      loss_axis: Optional[int] = None):
  """The jitted train step of a training, shared with equal earlier ones.

  Args:
    model: the module trained.
    config: the training config (loss, augmentation, optimizer, batch).
    num_steps: the training length.
    tx: the optimizer (`wrap_tx` applied, with extra-argument support).
    mesh: the training mesh (outputs are replicated over it).
    loss_fn: the recipe's loss; None: cross-entropy with the config's label
      smoothing.
    wrap_tx: the recipe's optimizer wrapper, or None.
    stacked: vmap over a leading model axis of the state (`train_members`).
    batch_axis: the images' and labels' model axis when stacked (None: one
      batch for every model).
    loss_axis: the loss arguments' model axis when stacked (None: one
      `loss_args` for every model, e.g. one teacher).

  Returns:
    `step(state, images, labels, loss_args, total_steps)` -> (new_state,
    metrics): one program (`jit_step`), or with `config.split_train_step`
    two (`two_program_step`), with the same numbers.
  """
  length_is_argument = wrap_tx is None or hasattr(wrap_tx, "program_key")
  devices = tuple(d.id for d in mesh.devices.flat)
  options = None if stacked else cpu_setup.train_step_compiler_options(
      _first_stage_elements(model, config, mesh),
      mesh.devices.flat[0].platform)
  gradient_key = (
      model, loss_fn or ("cross_entropy", float(config.label_smoothing)),
      config.dataset.crop_padding, bool(config.dataset.flip), stacked,
      batch_axis, loss_axis, devices,
      tuple(sorted(options.items())) if options else None)
  update_key = (
      config.optimizer.to_json_best_effort(sort_keys=True),
      None if length_is_argument else int(num_steps),
      getattr(wrap_tx, "program_key", wrap_tx), stacked, devices)
  loss_fn = loss_fn or functools.partial(
      _default_loss, label_smoothing=config.label_smoothing)
  augment = dict(crop_padding=config.dataset.crop_padding,
                 flip=config.dataset.flip)
  if not config.get("split_train_step", False):
    return shared(("step",) + gradient_key + update_key, lambda: jit_step(
        model, loss_fn, tx, mesh, stacked=stacked, batch_axis=batch_axis,
        loss_axis=loss_axis, options=options, **augment))
  return two_program_step(
      shared(("gradients",) + gradient_key, lambda: jit_gradients(
          model, loss_fn, mesh, stacked=stacked, batch_axis=batch_axis,
          loss_axis=loss_axis, options=options, **augment)),
      shared(("update",) + update_key,
             lambda: jit_update(tx, mesh, stacked=stacked)))


def _jit_on_batch(fn, model, mesh, num_outputs: int, *, stacked: bool,
                  batch_axis: Optional[int], options: Optional[dict],
                  extra_axes: tuple, donate=()):
  """`fn(state, images, labels, *extra, model=)` jitted as the trainer
  does: vmapped over a leading model axis when `stacked` (`extra_axes`:
  the extra arguments' model axes), outputs replicated over `mesh`, XLA
  `options` (logged)."""
  fn = functools.partial(fn, model=batched.for_vmap(model) if stacked
                         else model)
  if stacked:
    fn = jax.vmap(fn, in_axes=(0, batch_axis, batch_axis) + extra_axes)
  if options:
    logging.info("Train step compiled with XLA:CPU options %s (largest "
                 "activation >= %d elements per device; "
                 "cpu_setup.train_step_compiler_options).", options,
                 cpu_setup.ELTWISE_FUSION_MIN_ELEMENTS)
  return jax.jit(fn, out_shardings=(parallel.replicated(mesh),) * num_outputs,
                 donate_argnums=donate, compiler_options=options)


def jit_step(model, loss_fn: LossFn, tx, mesh, *, crop_padding: int,
             flip: bool, stacked: bool = False,
             batch_axis: Optional[int] = None,
             loss_axis: Optional[int] = None,
             options: Optional[dict] = None):
  """`train_step` jitted as the trainer compiles it (donates the state).

  Args:
    model, loss_fn, tx, crop_padding, flip: as `train_step`.
    mesh: the training mesh (outputs are replicated over it).
    stacked: vmap over a leading model axis of the state (`train_members`).
    batch_axis: the images' and labels' model axis when stacked (None: one
      batch for every model).
    loss_axis: the loss arguments' model axis when stacked (None: shared).
    options: XLA compiler options (`cpu_setup.train_step_compiler_options`).
  """
  fn = functools.partial(train_step, tx=tx, loss_fn=loss_fn,
                         crop_padding=crop_padding, flip=flip)
  return _jit_on_batch(fn, model, mesh, 2, stacked=stacked,
                       batch_axis=batch_axis, options=options,
                       extra_axes=(loss_axis, None), donate=0)


def jit_gradients(model, loss_fn: LossFn, mesh, *, crop_padding: int,
                  flip: bool, stacked: bool = False,
                  batch_axis: Optional[int] = None,
                  loss_axis: Optional[int] = None,
                  options: Optional[dict] = None):
  """`gradients` jitted as the trainer compiles it (arguments: `jit_step`)."""
  fn = functools.partial(gradients, loss_fn=loss_fn,
                         crop_padding=crop_padding, flip=flip)
  return _jit_on_batch(fn, model, mesh, 3, stacked=stacked,
                       batch_axis=batch_axis, options=options,
                       extra_axes=(loss_axis,))


def jit_update(tx, mesh, *, stacked: bool = False):
  """`apply_gradients` jitted as the trainer compiles it (donates the state)."""
  fn = functools.partial(apply_gradients, tx=tx)
  if stacked:
    fn = jax.vmap(fn, in_axes=(0, 0, 0, 0, None))
  return jax.jit(fn, out_shardings=(parallel.replicated(mesh),) * 2,
                 donate_argnums=0)


def two_program_step(grads_fn, update_fn):
  """`step(state, images, labels, loss_args, total_steps=None)` ->
  (new_state, metrics): `grads_fn` then `update_fn` (`jit_gradients`,
  `jit_update`).

  The gradient program depends on the model, loss and augmentation only,
  so a model and its pruning fine-tunes share it, and the update program
  depends on the optimizer only, so a distilled student shares its
  architecture's. This variant is kept because, measured on the CPUs it
  targets, it cuts the compile time of studies that train many models of
  one architecture briefly (the default study), while one program steps
  faster in long trainings; hence `config.split_train_step`.
  """

  def step(state, images, labels, loss_args, total_steps=None):
    # Without the optimizer state, the gradient program's signature is the
    # same for every optimizer wrapper.
    grads, batch_stats, metrics = grads_fn(state.replace(opt_state=None),
                                           images, labels, loss_args)
    return update_fn(state, grads, batch_stats, metrics, total_steps)

  return step


def _first_stage_elements(model, config, mesh) -> Optional[int]:
  """Elements of a CIFAR-style ResNet's first-stage activation per device.

  Per-device batch x height x width x `model.width`. None for other models
  (ImageNet-style stems, modules without an integer `width`): the XLA:CPU
  options it decides on helped CIFAR-style ResNets only.
  """
  width = getattr(model, "width", None)
  if not isinstance(width, int) or getattr(model, "stem", None) != "cifar":
    return None
  _, height, image_width, _ = factory.input_shape(config)
  per_device = max(1, int(config.batch_size) // mesh.devices.size)
  return per_device * height * image_width * width
