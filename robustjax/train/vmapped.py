"""K models of one architecture trained and evaluated as one program.

A sweep over pruning sparsities or seeds of one architecture fits on one
device many times over. Instead of K sequential runs, the K train states are
stacked along a leading *model axis* and the trainer's own `train_step` is
`jax.vmap`-ed over it, so one compiled program updates all K models per step:

  configs = [config_with(seed=s, sparsity=p) for s, p in ...]
  states, results = train_and_evaluate_vmapped(configs, workdir,
                                               member_workdirs=dirs)

The K configs may differ only in `seed` and `pruning.sparsity`
(`VMAPPABLE_FIELDS`); member i then ends exactly where
`trainer.train_and_evaluate(configs[i], dirs[i], hooks_for(configs[i]))` ends,
up to float reassociation (tested in tests/train/vmapped_test.py):

* init: `model.init` is vmapped over the members' `PRNGKey(seed)` (vmapped
  random draws equal the unbatched ones);
* masks: one-shot global magnitude masks at each member's sparsity from
  `robustjax.compress.pruning` (the same pruner `hooks_for` gives a single
  run), kept fixed by its optimizer wrapper and the trainer's `apply_masks`;
* data: member i sees the batches of `TrainBatches(seed_i)`; members sharing
  a seed share the batch (passed once, broadcast by vmap);
* each member dir gets what a single run writes (`config.json`,
  `metrics.jsonl`, `final_metrics.json`, an Orbax checkpoint of its own
  `TrainState`), so a later `train_and_evaluate` there resumes at the end.

The stacked state is checkpointed in `workdir` (resumable as a whole).
Evaluation is vmapped too: `accuracy_vmapped` (K models on a split) and
`robustness_vmapped` (K models x corruption severities x attack eps in one
program). Data parallelism composes: batches are still sharded on the mesh's
`data` axis and the stacked state is replicated.

On CPU, `for_vmap(model)` swaps in `unrolled_conv`, which vmaps as K plain
convolutions instead of one grouped convolution (XLA:CPU runs the latter up
to 12x slower); the trainer here does it automatically, and a model passed
to `robustness_vmapped` on CPU should be wrapped the same way
(benchmarks/vmap_results.md).
"""

import functools
import os
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import flax
import flax.linen as nn
import jax
from jax import custom_batching
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustjax import io
from robustjax import models
from robustjax import parallel
from robustjax.compress import pruning
from robustjax.data import pipeline
from robustjax.data import registry
from robustjax.data.registry import Split
from robustjax import checkpoint
from robustjax.train import metrics as metrics_lib
from robustjax.train import optim
from robustjax.train import state as state_lib
from robustjax.train import trainer

# Config fields in which the members of one vmapped group may differ.
VMAPPABLE_FIELDS = ("seed", "pruning.sparsity")


# ----------------------------------------------------------------------------
# Stacking.

def stack(trees: Sequence[Any]) -> Any:
  """Stacks K pytrees of equal structure along a new leading model axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Member `index` of a stacked pytree (host numpy leaves)."""
  return jax.tree.map(lambda x: np.asarray(x[index]), tree)


def num_members(tree: Any) -> int:
  return jax.tree.leaves(tree)[0].shape[0]


# ----------------------------------------------------------------------------
# Pruning (robustjax.compress.pruning: one-shot global unstructured magnitude
# masks with its default prunable set; the wrapped optimizer keeps pruned
# weights at zero).

def sparsity_of(config: ml_collections.ConfigDict) -> float:
  """`config.pruning.sparsity`, or 0 when the config has no pruning block."""
  block = config.get("pruning")
  return float(block.get("sparsity", 0.0)) if block is not None else 0.0


def pruner_for(config: ml_collections.ConfigDict):
  """The `compress.pruning` pruner of a config, or None when dense."""
  sparsity = sparsity_of(config)
  return pruning.magnitude_pruner(sparsity) if sparsity else None


def hooks_for(config: ml_collections.ConfigDict) -> Optional[trainer.Hooks]:
  """Trainer hooks of the single run that one vmapped member reproduces."""
  pruner = pruner_for(config)
  return pruner.hooks() if pruner is not None else None


# ----------------------------------------------------------------------------
# Group validation.

def group_key(config: ml_collections.ConfigDict) -> str:
  """Configs with equal keys can be trained as one vmapped program."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = 0
  if "pruning" in c and "sparsity" in c.pruning:
    c.pruning.sparsity = 0.0
  return c.to_json(sort_keys=True)


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ValueError unless the configs differ only in VMAPPABLE_FIELDS."""
  if not configs:
    raise ValueError("A vmapped group needs at least one config.")
  ref = group_key(configs[0])
  for i, c in enumerate(configs[1:], 1):
    if group_key(c) != ref:
      a = flax.traverse_util.flatten_dict(configs[0].to_dict(), sep=".")
      b = flax.traverse_util.flatten_dict(c.to_dict(), sep=".")
      diff = sorted(k for k in set(a) | set(b)
                    if a.get(k) != b.get(k) and k not in VMAPPABLE_FIELDS)
      raise ValueError(
          f"Config {i} of the vmapped group differs from config 0 in "
          f"{', '.join(diff)}; members may differ only in "
          f"{', '.join(VMAPPABLE_FIELDS)}. Train the others separately.")


# ----------------------------------------------------------------------------
# Convolutions that vmap well on CPU.
#
# `jax.vmap` turns a convolution whose kernel has a model axis into one
# grouped convolution (and its kernel gradient into a `batch_group_count`
# convolution). XLA:CPU runs those far slower than K separate convolutions
# (a ResNet-8 layer, K = 8: forward 10x, gradients 12x slower), which made a
# vmapped step 6x slower than K sequential ones. `unrolled_conv`
# computes the same convolution but, under vmap, runs one ordinary
# convolution per model (forward and both gradients) inside the one
# program.

def _unrolled(fn):
  """`fn` whose vmap rule loops over the mapped axis instead of batching."""
  @custom_batching.custom_vmap
  def f(*args):
    return fn(*args)

  @f.def_vmap
  def rule(axis_size, in_batched, *args):
    outs = [f(*[a[i] if b else a for a, b in zip(args, in_batched)])
            for i in range(axis_size)]
    return stack(outs), jax.tree.map(lambda _: True, outs[0])
  return f


@functools.lru_cache(maxsize=None)
def _unrolled_conv_fn(static):
  kwargs = dict(static)

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, **kwargs)

  dn = kwargs["dimension_numbers"]
  batch_first = dn is None or getattr(dn, "lhs_spec", (0,))[0] == 0 or (
      isinstance(dn[0], str) and dn[0][0] == "N")

  @custom_batching.custom_vmap
  def forward(x, w):
    return conv(x, w)

  @forward.def_vmap
  def forward_rule(axis_size, in_batched, x, w):
    x_mapped, w_mapped = in_batched
    if not w_mapped and batch_first:  # One kernel: fold into the batch.
      y = forward(x.reshape((-1,) + x.shape[2:]), w)
      return y.reshape((axis_size, -1) + y.shape[1:]), True
    return stack([forward(x[i] if x_mapped else x, w[i] if w_mapped else w)
                  for i in range(axis_size)]), True

  backward = _unrolled(lambda x, w, g: jax.vjp(conv, x, w)[1](g))

  @jax.custom_vjp
  def f(x, w):
    return forward(x, w)
  f.defvjp(lambda x, w: (forward(x, w), (x, w)),
           lambda res, g: backward(*res, g))
  return f


def _hashable(v):
  if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
    return tuple(_hashable(e) for e in v)  # Lists -> tuples (NamedTuples kept).
  return v


def unrolled_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                  rhs_dilation=None, dimension_numbers=None,
                  feature_group_count=1, batch_group_count=1, precision=None,
                  preferred_element_type=None):
  """`lax.conv_general_dilated` that vmaps as K convolutions (see above)."""
  static = dict(window_strides=_hashable(window_strides),
                padding=_hashable(padding),
                lhs_dilation=_hashable(lhs_dilation),
                rhs_dilation=_hashable(rhs_dilation),
                dimension_numbers=_hashable(dimension_numbers),
                feature_group_count=feature_group_count,
                batch_group_count=batch_group_count, precision=precision,
                preferred_element_type=preferred_element_type)
  return _unrolled_conv_fn(tuple(sorted(static.items())))(lhs, rhs)


def for_vmap(model, backend: Optional[str] = None):
  """`model` with `unrolled_conv` on CPU (same params, same function).

  Only a model with the default `flax.linen.Conv` op is changed (an injected
  quantized conv is left alone); on GPU/TPU the batched convolution is kept.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu" or getattr(model, "conv", None) is not nn.Conv:
    return model
  return model.clone(conv=functools.partial(
      nn.Conv, conv_general_dilated=unrolled_conv))


# ----------------------------------------------------------------------------
# Training.

def init_states(configs, model, tx, hooks: Optional[trainer.Hooks] = None):
  """The stacked initial `TrainState` of the members (as single runs would)."""
  config = configs[0]
  rngs = jnp.stack([jax.random.PRNGKey(c.seed) for c in configs])
  split_rngs = jax.vmap(jax.random.split)(rngs)
  init_rngs, state_rngs = split_rngs[:, 0], split_rngs[:, 1]
  if hooks is not None and hooks.init_variables is not None:
    variables = stack([hooks.init_variables] * len(configs))
  elif config.model.init:  # Pretrained: the same weights for every member.
    one = trainer.init_variables(model, config, init_rngs[0])
    variables = stack([one] * len(configs))
  else:
    spec_shape = _input_shape(config)
    variables = jax.jit(jax.vmap(lambda r: model.init(
        r, jnp.zeros(spec_shape, jnp.float32), train=False)))(init_rngs)
    variables = flax.core.unfreeze(variables)
  params = variables["params"]
  masks = None
  if any(sparsity_of(c) for c in configs):
    # Per member, exactly as its single run (`hooks_for`) computes them.
    masks = stack([pruning.magnitude_masks(
        jax.tree.map(lambda x, i=i: x[i], params), sparsity_of(c))
                   for i, c in enumerate(configs)])

  @jax.jit
  @jax.vmap
  def create(params, batch_stats, rng, masks):
    return state_lib.create(trainer.apply_masks(params, masks), batch_stats,
                            tx, rng, masks)
  return create(params, variables.get("batch_stats", {}), state_rngs, masks)


def _input_shape(config):
  spec = registry.get_spec(config.dataset.name)
  return (1, config.dataset.image_size, config.dataset.image_size,
          spec.channels)


def make_train_step(config, model, tx, shared_batch: bool,
                    hooks: Optional[trainer.Hooks] = None):
  """`trainer.train_step` vmapped over the model axis (not yet jitted).

  Args:
    config: the group's config (augmentation, label smoothing).
    model: the Flax module.
    tx: the optax transformation.
    shared_batch: True: batch [B, ...] shared by all members; False: one
      batch per member, stacked on axis 1 ([B, K, ...], so axis 0 stays the
      data-parallel axis).
    hooks: optional `loss_fn` / `post_update` hooks.

  Returns:
    `(stacked_state, images, labels) -> (stacked_state, metrics [K])`.
  """
  hooks = hooks or trainer.Hooks()
  loss_fn = hooks.loss_fn or functools.partial(
      lambda lg, lb, x, s: trainer.cross_entropy(lg, lb, s),
      s=config.label_smoothing)
  step = functools.partial(
      trainer.train_step, model=model, tx=tx, loss_fn=loss_fn,
      crop_padding=config.dataset.crop_padding, flip=config.dataset.flip,
      post_update=hooks.post_update)
  batch_axis = None if shared_batch else 1
  return jax.vmap(step, in_axes=(0, batch_axis, batch_axis))


def train_and_evaluate_vmapped(
    configs: Sequence[ml_collections.ConfigDict], workdir: str,
    member_workdirs: Optional[Sequence[str]] = None,
    hooks: Optional[trainer.Hooks] = None,
) -> Tuple[state_lib.TrainState, List[Dict[str, float]]]:
  """Trains K models (differing in seed / sparsity) as one vmapped program.

  Args:
    configs: K configs that differ only in `VMAPPABLE_FIELDS`.
    workdir: where the stacked state is checkpointed (the run resumes from
      it) and `group.json` lists the members.
    member_workdirs: optional K folders; each receives what a single run
      writes there (config, metrics, final metrics, its own checkpoint).
    hooks: optional shared hooks (`model`, `init_variables`, `wrap_tx`,
      `loss_fn`, `post_update`); masks come from each member's
      `pruning.sparsity`, so `init_masks` is not accepted.

  Returns:
    (stacked final `TrainState`, K dicts of final metrics like a single
    run's `final_metrics.json`).
  """
  check_group(configs)
  hooks = hooks or trainer.Hooks()
  if hooks.init_masks is not None:
    raise ValueError("Vmapped members get magnitude masks from "
                     "config.pruning.sparsity; hooks.init_masks is not used.")
  k = len(configs)
  if member_workdirs is not None and len(member_workdirs) != k:
    raise ValueError(f"{len(member_workdirs)} member workdirs for {k} "
                     "configs.")
  config = configs[0]
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  main = parallel.is_main_process()
  logging.info("Vmapped group of %d models on %d x %s devices (mesh %s).", k,
               jax.device_count(), jax.devices()[0].platform, dict(mesh.shape))
  if main:
    io.write_json(os.path.join(workdir, "group.json"), {
        "members": [os.path.basename(d) for d in member_workdirs or []],
        "seeds": [int(c.seed) for c in configs],
        "sparsities": [sparsity_of(c) for c in configs]})
    for c, d in zip(configs, member_workdirs or ()):
      io.write_atomic(os.path.join(d, "config.json"),
                            c.to_json_best_effort(indent=2))

  train_split, eval_splits = trainer.load_data(config)
  seeds = [int(c.seed) for c in configs]
  shared = len(set(seeds)) == 1
  batches = {s: pipeline.TrainBatches(train_split, config.batch_size, s,
                                      jax.process_index(),
                                      jax.process_count())
             for s in dict.fromkeys(seeds)}
  steps_per_epoch = batches[seeds[0]].steps_per_epoch
  num_steps = trainer.total_steps(config, steps_per_epoch)
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                else steps_per_epoch)

  model = for_vmap(hooks.model or trainer.build_model(config))
  tx = optim.make(config.optimizer, num_steps)
  if hooks.wrap_tx is not None:
    tx = hooks.wrap_tx(tx)
  if any(sparsity_of(c) for c in configs):
    # As the pruned members' single runs; for the dense ones in the group
    # the all-True masks make the wrapper an exact no-op.
    tx = pruning.wrap_optax(tx)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  state = parallel.replicate(mesh, init_states(configs, model, tx, hooks))
  if ckpt.latest_step() is not None:
    state = ckpt.restore(checkpoint.abstract(state))
    logging.info("Resuming the vmapped group from step %d.",
                 int(state.step[0]))
  start = int(state.step[0])

  step_fn = jax.jit(make_train_step(config, model, tx, shared, hooks),
                    out_shardings=(parallel.replicated(mesh),) * 2,
                    donate_argnums=0)
  apply_fn = models.inference_fn(model)
  writers = [metrics_lib.MetricWriter(d) for d in member_workdirs or ()]

  def get_batch(step):
    if shared:
      return batches[seeds[0]].batch(step)
    parts = [batches[s].batch(step) for s in seeds]
    return (np.stack([p[0] for p in parts], 1),
            np.stack([p[1] for p in parts], 1))

  def evaluate(step):
    results = {name: accuracy_vmapped(apply_fn, state.variables, split,
                                      config.eval_batch_size, mesh)
               for name, split in eval_splits.items()}
    for i, w in enumerate(writers):
      w.write(step, "eval", **{f"{n}_accuracy": a[i]
                               for n, a in results.items()})
    logging.info("Step %d eval: %s", step, "; ".join(
        f"{n} " + " ".join(f"{a:.2%}" for a in acc)
        for n, acc in results.items()))
    return results

  pending, t0, t_steps, results = [], time.time(), 0, None
  for step in range(start + 1, num_steps + 1):
    images, labels = parallel.shard_batch(mesh, *get_batch(step - 1))
    state, m = step_fn(state, images, labels)
    pending.append(m)
    t_steps += 1
    last = step == num_steps
    if step % config.log_every_steps == 0 or last:
      pending = jax.device_get(pending)
      finite = np.min([p["finite"] for p in pending], axis=0)
      if np.any(finite < 1.0):
        raise FloatingPointError(
            f"The training loss of member(s) {np.flatnonzero(finite < 1)} "
            f"became NaN/Inf before step {step}; the last good checkpoint is "
            f"in {ckpt.directory}. Lower the learning rate or clip gradients.")
      mean = {n: np.mean([p[n] for p in pending], axis=0)
              for n in ("loss", "accuracy")}
      rate = t_steps * config.batch_size * k / max(time.time() - t0, 1e-9)
      for i, w in enumerate(writers):
        w.write(step, "train", images_per_sec=rate / k,
                epoch=step / steps_per_epoch,
                **{n: v[i] for n, v in mean.items()})
      logging.info("Step %d/%d: loss %s, %.0f img/s (all %d models).", step,
                   num_steps, np.array2string(mean["loss"], precision=4),
                   rate, k)
      pending, t0, t_steps = [], time.time(), 0
    if step % eval_every == 0 or last:
      results = evaluate(step)
    if step % config.checkpoint_every_steps == 0 or last:
      ckpt.save(step, state)
  if results is None:
    results = evaluate(num_steps)
  ckpt.close()
  for w in writers:
    w.close()

  finals = [{"step": int(state.step[i]),
             **{f"{n}_accuracy": float(a[i]) for n, a in results.items()}}
            for i in range(k)]
  for i, d in enumerate(member_workdirs or ()):
    member = jax.tree.map(lambda x, i=i: x[i], state)
    if not sparsity_of(configs[i]):
      member = member.replace(masks=None)  # As a single unpruned run.
    member_ckpt = checkpoint.Checkpointer(d, keep=config.keep_checkpoints)
    if member_ckpt.latest_step() != num_steps:  # Not yet written (rerun).
      member_ckpt.save(num_steps, member)
    member_ckpt.close()
    if main:
      io.write_json(os.path.join(d, "final_metrics.json"), finals[i])
  return state, finals


# ----------------------------------------------------------------------------
# Evaluation.

_COMPILED = {}


def _cached(key, build):
  if key not in _COMPILED:
    _COMPILED[key] = build()
  return _COMPILED[key][-1]


def accuracy_vmapped(apply_fn: Callable, stacked_variables: Any, split: Split,
                     batch_size: int,
                     mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """Top-1 accuracy of each of K stacked models on `split`.

  Args:
    apply_fn: `logits = apply_fn(variables, images)` for one model.
    stacked_variables: variables with a leading model axis of size K.
    split: a loaded split (uint8 images).
    batch_size: global evaluation batch (rounded up to the device count).
    mesh: device mesh (default: all devices); batches are sharded on it.

  Returns:
    float64 [K] accuracies (the same counts as `eval_lib.accuracy` per model).
  """
  mesh = mesh or parallel.make_mesh()
  n_dev = mesh.devices.size
  batch_size = -(-batch_size // n_dev) * n_dev

  def build():
    def correct(variables, images, labels, mask):
      logits = apply_fn(variables, pipeline.to_float(images))
      return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
    return apply_fn, jax.jit(jax.vmap(correct, in_axes=(0, None, None, None)))
  fn = _cached(("accuracy", id(apply_fn)), build)
  total = 0.0
  for images, labels, mask in pipeline.eval_batches(split, batch_size):
    batch = parallel.shard_global_batch(mesh, images, labels, mask)
    total = total + np.asarray(fn(stacked_variables, *batch), np.float64)
  return total / len(split)


def _example_keys(key, n):
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


def _robust_counts(apply_fn, corruptions, attack, level_map, variables,
                   images, labels, keys, valid, severities, eps_grid):
  """Correct counts: clean [K], per corruption [K, S], attack [K, E]."""
  def count(v, x):
    pred = jnp.argmax(apply_fn(v, x), -1)
    return jnp.sum((pred == labels) & valid, dtype=jnp.int32)

  def over_levels(fn, levels):
    if level_map == "map":
      return jax.lax.map(fn, levels)
    return jax.vmap(fn)(levels)

  out = {"clean": jax.vmap(count, (0, None))(variables, images)}
  for c in corruptions:
    ckeys = jax.vmap(jax.random.fold_in, (0, None))(
        keys, _name_hash(c.name))

    def corrupt(sev, c=c, ckeys=ckeys):
      return jax.vmap(lambda x, k: c.apply(x[None], sev, k)[0])(images,
                                                                 ckeys)
    shifted = over_levels(corrupt, severities)  # [S, n, ...], shared by K.
    out[c.name] = jax.vmap(lambda v, s=shifted: over_levels(
        lambda x: count(v, x), s))(variables)
  if attack is not None:
    def attacked(v):
      return over_levels(lambda eps: count(v, attack.perturb(
          apply_fn, v, images, labels, keys, eps)), eps_grid)
    out[attack.name] = jax.vmap(attacked)(variables)
  return out


def _name_hash(name: str) -> int:
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def robustness_vmapped(apply_fn: Callable, stacked_variables: Any, images,
                       labels, key: jax.Array, *,
                       corruptions: Sequence[Any] = (),
                       severities: Sequence[int] = (1, 2, 3, 4, 5),
                       attack: Any = None, eps_grid: Sequence[float] = (),
                       chunk_size: Optional[int] = None,
                       mesh: Optional[jax.sharding.Mesh] = None,
                       level_map: str = "vmap") -> Dict[str, np.ndarray]:
  """K models x corruption severities x attack eps, in one compiled program.

  The program is vmapped over the model axis of `stacked_variables` and, per
  model, over the levels (severities / eps are traced values). Corrupted
  images are computed once per severity and shared by the K models.
  Example i uses the key `fold_in(key, i)` (the corruption's key is further
  folded with the corruption name), so results do not depend on
  `chunk_size` or the number of devices.

  Args:
    apply_fn: `logits = apply_fn(variables, images)` for one model; on CPU
      build it from `for_vmap(model)`.
    stacked_variables: variables with a leading model axis of size K.
    images: [n, H, W, C] uint8 or float in [0, 1].
    labels: int [n].
    key: PRNG key for corruption noise and attack random starts.
    corruptions: `robustjax.robustness.corruptions.Corruption`s.
    severities: severity levels (1..5) for every corruption.
    attack: an `attacks.Attack` or None.
    eps_grid: attack radii in pixel units.
    chunk_size: examples per program call (bounds memory; the last chunk is
      padded and masked). Rounded up to a multiple of the device count.
    mesh: device mesh (default: all devices); chunks are sharded on it.
    level_map: "vmap" or "map" (`lax.map`) over levels; measure both on CPU.

  Returns:
    {"clean": [K], <corruption name>: [K, S], <attack name>: [K, E]}
    accuracies (float64 numpy).
  """
  if level_map not in ("vmap", "map"):
    raise ValueError(f"level_map must be 'vmap' or 'map', got {level_map!r}.")
  if attack is not None and not len(eps_grid):
    raise ValueError("An attack needs a non-empty eps_grid.")
  mesh = mesh or parallel.make_mesh()
  images = np.asarray(pipeline.to_float(images))
  labels = np.asarray(labels)
  n = len(labels)
  if images.shape[0] != n or n == 0:
    raise ValueError(f"Got {images.shape[0]} images and {n} labels.")
  n_dev = mesh.devices.size
  chunk = n if chunk_size is None else min(int(chunk_size), n)
  chunk = -(-chunk // n_dev) * n_dev
  keys = np.asarray(_example_keys(key, n))
  severities = jnp.asarray(severities, jnp.int32)
  eps_grid = jnp.asarray(eps_grid, jnp.float32)

  cache_key = ("robust", id(apply_fn), tuple(id(c) for c in corruptions),
               id(attack), level_map)
  fn = _cached(cache_key, lambda: (apply_fn, corruptions, attack, jax.jit(
      functools.partial(_robust_counts, apply_fn, tuple(corruptions), attack,
                        level_map))))
  totals = None
  for start in range(0, n, chunk):
    x, y, k = (a[start:start + chunk] for a in (images, labels, keys))
    valid = np.ones((chunk,), bool)
    pad = chunk - len(y)
    if pad:  # Repeat the first example, masked out.
      valid[len(y):] = False
      x, y, k = (np.concatenate([a, np.repeat(a[:1], pad, 0)])
                 for a in (x, y, k))
    batch = parallel.shard_global_batch(mesh, x, y, k, valid)
    counts = fn(stacked_variables, *batch, severities, eps_grid)
    counts = jax.tree.map(lambda c: np.asarray(c, np.float64), counts)
    totals = counts if totals is None else jax.tree.map(np.add, totals,
                                                        counts)
  return {name: c / n for name, c in totals.items()}
