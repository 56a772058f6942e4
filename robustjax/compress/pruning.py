"""Magnitude pruning with an optax-like functional API.

A *pruner* is a small NamedTuple of pure functions (jaxpruner / optax style);
it plugs into the one training loop by wrapping the optimizer:

  pruner = pruning.magnitude_pruner(0.9, scope="global")
  recipe = train.Recipe(init_variables=pruner.prepare(base_variables),
                        wrap_tx=pruner.wrap_tx)
  train.train_and_evaluate(config, workdir, recipe)

Masks are pytrees shaped like the params, boolean, `True` = kept. They live
in the optimizer state (`PruningState.masks`), so the train step never asks
whether it is pruning; every leaf has a mask (all `True` for leaves that are
never pruned: biases, normalisation parameters, and by default the first
conv `conv_init` and the classifier `head`).

Guarantees:

* **Exact sparsity.** Pruning `s` of `n` weights removes exactly
  `k = round(s * n)` of them (round half up, computed in float64 when `s` is
  a Python number). Ties in magnitude are broken by position (a stable sort),
  so equal weights never make the count drift.
* **Zeros stay zero.** `wrap_optax` masks the incoming gradients (so momentum
  never accumulates for pruned weights) and the outgoing updates (so weight
  decay, momentum left over from before a weight was pruned, or anything
  else the wrapped optimizer adds cannot move them); a pruned weight's
  update is `-w`, so it is exactly zero after every step.
* **Monotone gradual pruning.** A weight pruned once is never revived: when
  masks are recomputed, previously pruned weights rank below every kept one.

Scopes: `global` (one threshold over all prunable weights) or `layerwise`
(the same sparsity in every prunable tensor). Structures: `unstructured`
(single weights) or `channel` (whole output filters, ranked by the L1 or L2
norm of each filter; with `global` scope the norms are divided by the fan-in
(L1) or its square root (L2) so layers of different sizes compare fairly, and
`k` counts filters; layer-wise channel pruning always keeps at least one
filter per layer, global channel pruning does not). Schedules: `oneshot`
(prune at the start, fine-tune with fixed masks) and `gradual` (Zhu & Gupta 2017: the sparsity follows
`s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3` between steps t0 and
t1, masks recomputed inside the optimizer update every `update_every`
steps, fixed after t1).
"""

import re
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax.compress import magnitude
from robustjax.train import steps

Params = Any
Masks = Any
# (path tuple, leaf) -> whether the leaf may be pruned.
PrunableFn = Callable[[Sequence[str], Any], bool]

SCOPES = ("global", "layerwise")
STRUCTURES = ("unstructured", "channel")
SCHEDULES = ("oneshot", "gradual")
NORMS = ("l1", "l2")


def _check(name: str, value: str, valid: Sequence[str]) -> None:
  if value not in valid:
    raise ValueError(f"Unknown pruning {name} {value!r}; use one of "
                     f"{', '.join(valid)}.")


def _path_names(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def path_str(path) -> str:
  """'stage1_block1/conv1/kernel' for a pytree key path or name tuple."""
  names = path if all(isinstance(p, str) for p in path) else _path_names(path)
  return "/".join(str(p) for p in names)


@steps.same_object_for_same_args  # Same settings, same object.
def default_prunable(prune_first: bool = False, prune_last: bool = False,
                     exclude: Sequence[str] = ()) -> PrunableFn:
  """Which params may be pruned: conv and dense kernels only.

  Args:
    prune_first: also prune the first convolution (`conv_init`).
    prune_last: also prune the classifier (`head`).
    exclude: regular expressions; a param whose path ('a/b/kernel') matches
      any of them is never pruned.

  Returns:
    A `(path, leaf) -> bool` predicate. Biases, BatchNorm scales/biases and
    anything that is not a >= 2-D `kernel` are never pruned.
  """
  patterns = [re.compile(p) for p in exclude]

  def prunable(path, leaf):
    names = tuple(path)
    if not names or names[-1] != "kernel" or np.ndim(leaf) < 2:
      return False
    if not prune_first and "conv_init" in names:
      return False
    if not prune_last and "head" in names:
      return False
    return not any(p.search(path_str(names)) for p in patterns)

  return prunable


def prunable_tree(params: Params, prunable: Optional[PrunableFn] = None):
  """A params-shaped tree of Python bools: which leaves may be pruned."""
  prunable = prunable or default_prunable()
  return jax.tree_util.tree_map_with_path(
      lambda p, x: bool(prunable(_path_names(p), x)), params)


def magnitude_masks(params: Params, sparsity: Union[float, jax.Array], *,
                    scope: str = "global", structure: str = "unstructured",
                    norm: str = "l1", prunable: Optional[PrunableFn] = None,
                    prev_masks: Optional[Masks] = None) -> Masks:
  """Magnitude-pruning masks at `sparsity` (jittable; sparsity may be traced).

  Args:
    params: model parameters.
    sparsity: fraction of prunable weights (unstructured) or of output
      filters (channel) to remove, in [0, 1].
    scope: "global" (one ranking over all prunable tensors) or "layerwise"
      (each prunable tensor pruned to `sparsity`).
    structure: "unstructured" or "channel" (whole output filters).
    norm: filter score for channel pruning, "l1" or "l2".
    prunable: `(path, leaf) -> bool`; default `default_prunable()`.
    prev_masks: masks from an earlier pruning step; weights they removed rank
      lowest, so they stay removed (gradual pruning is monotone).

  Returns:
    Boolean masks shaped like `params` (True = kept; all True on leaves that
    are not prunable).
  """
  _check("scope", scope, SCOPES)
  _check("structure", structure, STRUCTURES)
  _check("norm", norm, NORMS)
  leaves, treedef = jax.tree.flatten(params)
  flags = treedef.flatten_up_to(prunable_tree(params, prunable))
  prev = (treedef.flatten_up_to(prev_masks) if prev_masks is not None
          else None)
  return jax.tree.unflatten(treedef, magnitude.masks(
      leaves, flags, sparsity, prev=prev, scope=scope, structure=structure,
      norm=norm))


@jax.jit  # One program per model, not one per weight shape.
def apply_masks(params: Params, masks: Optional[Masks]) -> Params:
  """params * masks (masked weights become exactly zero)."""
  if masks is None:
    return params
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)),
                      params, masks)


def polynomial_schedule(final_sparsity: float, begin_step: int, end_step: int,
                        initial_sparsity: float = 0.0,
                        power: float = 3.0) -> Callable[[Any], Any]:
  """Zhu & Gupta (2017) sparsity schedule: step -> sparsity.

  `s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^power`, constant
  `s_i` before t0 and `s_f` after t1.
  """
  if end_step <= begin_step:
    raise ValueError(f"Gradual pruning needs end_step ({end_step}) > "
                     f"begin_step ({begin_step}); train for more steps.")

  def schedule(step):
    t = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) /
                 (end_step - begin_step), 0.0, 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (
        1.0 - t) ** power

  return schedule


class PruningState(NamedTuple):
  """Optimizer state of `wrap_optax`: the wrapped state, masks, update count."""
  inner: Any
  masks: Masks
  count: jax.Array


def wrap_optax(tx: optax.GradientTransformation,
               masks: Optional[Masks] = None, *,
               init_masks: Optional[Callable[[Params], Masks]] = None,
               update_masks: Optional[Callable[[Any, Params, Masks], Masks]]
               = None) -> optax.GradientTransformation:
  """Wraps an optax transformation so that pruned weights are zero and stay so.

  The masks live in the optimizer state (jaxpruner style), so a train step
  that applies `tx` never needs to know that it is pruning. Incoming
  gradients are masked before the wrapped transformation sees them (no
  momentum builds up on pruned weights); its updates are masked on the way
  out, and a pruned weight gets the update `-w`, so after
  `optax.apply_updates` every pruned weight is exactly zero (already at the
  first step, whatever the initial parameters were).

  Args:
    tx: the optimizer to wrap (e.g. from `robustjax.train.optim.make`).
    masks: fixed masks (one-shot pruning of known weights), or
    init_masks: `params -> masks` computed by `init` (e.g. magnitude masks
      of the initial weights).
    update_masks: optional `(count, new_params, masks) -> masks`, jittable,
      run after every update with the update count (1 after the first
      update) and the candidate parameters (gradual pruning).

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a
    `PruningState`; extra `update` arguments (e.g. `total_steps`) go to `tx`.
  """
  if (masks is None) == (init_masks is None):
    raise ValueError("pruning.wrap_optax needs exactly one of `masks` "
                     "(fixed) or `init_masks` (computed from the params).")

  def init(params):
    m = masks if masks is not None else init_masks(params)
    return PruningState(inner=tx.init(params), masks=m,
                        count=jnp.zeros((), jnp.int32))

  tx = optax.with_extra_args_support(tx)

  def update(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("pruning.wrap_optax needs `params` in update().")
    m = state.masks
    inner_updates, inner = tx.update(apply_masks(updates, m), state.inner,
                                     params, **extra_args)
    inner_updates = apply_masks(inner_updates, m)
    count = state.count + 1
    if update_masks is not None:
      m = update_masks(count, optax.apply_updates(params, inner_updates), m)
    out = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p), inner_updates,
                       params, m)
    return out, PruningState(inner=inner, masks=m, count=count)

  return optax.GradientTransformationExtraArgs(init, update)


def masks_of(opt_state) -> Optional[Masks]:
  """The masks inside an optimizer state built with `wrap_optax` (or None)."""
  found = []

  def visit(node):
    if isinstance(node, PruningState):
      found.append(node.masks)
      return True
    return False

  jax.tree.map(lambda x: x, opt_state, is_leaf=visit)
  return found[0] if found else None


class Pruner(NamedTuple):
  """A pruning method as pure functions (optax style).

  Attributes:
    wrap_tx: `tx -> tx` keeping the masks in the optimizer state.
    prepare: `variables -> variables` applied to the starting weights (one-
      shot pruning of a trained model zeroes them before fine-tuning).
    sparsity_at: step -> target sparsity.
    config: the settings, for metadata.
  """
  wrap_tx: Callable[[optax.GradientTransformation],
                    optax.GradientTransformation]
  prepare: Callable[[Any], Any]
  sparsity_at: Callable[[Any], Any]
  config: Dict[str, Any]


@steps.same_object_for_same_args  # Same settings, same object.
def magnitude_pruner(sparsity: float, *, scope: str = "global",
                     structure: str = "unstructured", norm: str = "l1",
                     schedule: str = "oneshot", begin_step: int = 0,
                     end_step: int = 0, update_every: int = 10,
                     initial_sparsity: float = 0.0,
                     prunable: Optional[PrunableFn] = None) -> Pruner:
  """Magnitude pruning to `sparsity`, one-shot or gradual.

  One-shot: the masks are the magnitude masks of the starting weights, fixed
  for the whole run; `prepare` zeroes the pruned starting weights so the
  first forward pass already sees the pruned network. Gradual: masks start
  at `initial_sparsity` and are recomputed inside the optimizer every
  `update_every` updates between `begin_step` and `end_step`.

  Args:
    sparsity: final fraction of prunable weights (or filters) removed.
    scope: "global" or "layerwise".
    structure: "unstructured" or "channel".
    norm: "l1" or "l2" (filter ranking for channel pruning).
    schedule: "oneshot" or "gradual".
    begin_step, end_step: gradual schedule span in optimizer steps.
    update_every: gradual masks are recomputed every this many steps.
    initial_sparsity: sparsity at `begin_step` (gradual).
    prunable: `(path, leaf) -> bool`; default `default_prunable()`.

  Returns:
    A `Pruner`; the same object for the same arguments, so trainings with
    the same pruning settings share one compiled train step (the trainer
    keys its jitted steps on `wrap_tx`).
  """
  _check("scope", scope, SCOPES)
  _check("structure", structure, STRUCTURES)
  _check("schedule", schedule, SCHEDULES)
  _check("norm", norm, NORMS)
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"Sparsity must be in [0, 1), got {sparsity}.")
  kw = dict(scope=scope, structure=structure, norm=norm, prunable=prunable)
  update_masks = None
  if schedule == "oneshot":
    sparsity_at = lambda step: sparsity  # pylint: disable=unused-argument
    first = sparsity
  else:
    if update_every < 1:
      raise ValueError(f"update_every must be >= 1, got {update_every}.")
    sparsity_at = polynomial_schedule(sparsity, begin_step, end_step,
                                      initial_sparsity)
    first = initial_sparsity

    def update_masks(count, params, masks):
      due = ((count >= begin_step) & (count <= end_step) &
             ((count - begin_step) % update_every == 0)) | (count == end_step)
      return jax.lax.cond(
          due, lambda: magnitude_masks(params, sparsity_at(count),
                                       prev_masks=masks, **kw),
          lambda: masks)

  def init_masks(params):
    return magnitude_masks(params, first, **kw)

  def prepare(variables):
    params = variables["params"]
    return dict(variables, params=apply_masks(params, init_masks(params)))

  def wrap_tx(tx):
    return wrap_optax(tx, init_masks=init_masks, update_masks=update_masks)

  if update_masks is None:
    # The update only reads the masks in the optimizer state: every one-shot
    # pruner compiles the same train step.
    steps.set_program_key(wrap_tx, ("pruning.wrap_optax", "fixed masks"))

  config = dict(method="magnitude", sparsity=sparsity, scope=scope,
                structure=structure, norm=norm, schedule=schedule,
                begin_step=begin_step, end_step=end_step,
                update_every=update_every, initial_sparsity=initial_sparsity)
  return Pruner(wrap_tx=wrap_tx, prepare=prepare, sparsity_at=sparsity_at,
                config=config)


def sparsity_report(params: Params,
                    prunable: Optional[PrunableFn] = None) -> Dict[str, Any]:
  """Per-tensor and overall sparsity (zeros / size) of `params`.

  Args:
    params: model parameters (host or device arrays).
    prunable: which leaves count as prunable; default `default_prunable()`.

  Returns:
    {"layers": {path: {"shape", "size", "zeros", "sparsity", "prunable",
    "zero_channels", "channels"}}, "prunable_size", "prunable_zeros",
    "prunable_sparsity", "total_size", "total_zeros", "overall_sparsity"}.
    `zero_channels` counts output channels (last axis) that are all zero.
  """
  flags = prunable_tree(params, prunable)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  flat_flags = flax.traverse_util.flatten_dict(flax.core.unfreeze(flags))
  layers = {}
  tot = [0, 0, 0, 0]
  for path, x in sorted(flat.items()):
    x = np.asarray(x)
    zeros = int(x.size - np.count_nonzero(x))
    entry = dict(shape=list(x.shape), size=int(x.size), zeros=zeros,
                 sparsity=zeros / max(x.size, 1),
                 prunable=bool(flat_flags[path]))
    if x.ndim >= 2:
      per = x.reshape(-1, x.shape[-1])
      entry["channels"] = int(x.shape[-1])
      entry["zero_channels"] = int(np.sum(~np.any(per != 0, axis=0)))
    layers["/".join(path)] = entry
    tot[0] += x.size
    tot[1] += zeros
    if entry["prunable"]:
      tot[2] += x.size
      tot[3] += zeros
  return dict(layers=layers, total_size=tot[0], total_zeros=tot[1],
              overall_sparsity=tot[1] / max(tot[0], 1), prunable_size=tot[2],
              prunable_zeros=tot[3],
              prunable_sparsity=tot[3] / max(tot[2], 1))


def format_report(report: Dict[str, Any], only_prunable: bool = False) -> str:
  """The sparsity report as a fixed-width text table."""
  rows = [("param", "shape", "size", "zeros", "sparsity", "zero ch.")]
  for name, e in report["layers"].items():
    if only_prunable and not e["prunable"]:
      continue
    ch = (f"{e['zero_channels']}/{e['channels']}" if "channels" in e
          else "")
    rows.append((name + ("" if e["prunable"] else " (kept)"),
                 "x".join(map(str, e["shape"])), str(e["size"]),
                 str(e["zeros"]), f"{100 * e['sparsity']:.2f}%", ch))
  rows.append(("prunable total", "", str(report["prunable_size"]),
               str(report["prunable_zeros"]),
               f"{100 * report['prunable_sparsity']:.2f}%", ""))
  rows.append(("overall", "", str(report["total_size"]),
               str(report["total_zeros"]),
               f"{100 * report['overall_sparsity']:.2f}%", ""))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths)))
           for r in rows]
  lines.insert(1, "-" * len(lines[0]))
  lines.insert(len(lines) - 2, "-" * len(lines[0]))
  return "\n".join(lines)
