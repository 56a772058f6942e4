"""Which of a study's models train together as one vmapped program.

With `config.study.grouped` on, the runner trains, before evaluating, the
models that can share one compiled training program as one
`recipes.train_together` group (`trainer.train_members`):

- the originals of one arch across seeds, with the negative control's
  replicates of that arch (their configs differ only in the seed);
- the one-shot unstructured fine-tunes of one arch and scope across seeds
  and sparsities (the masks live in the optimizer state, so one program
  serves every sparsity);
- the distilled students of one arch (and alpha) across seeds, each with
  its own seed's teacher (stacked loss arguments), and their no-KD controls.

Gradual and channel pruning and quantization are built one by one as
before. Each member is saved where its own training would save it, so
evaluation, resume and the report do not know whether a model was trained in
a group. A grouped member's steps equal its own training's up to float
rounding (members are batched); training amplifies rounding, so a trained
model can end as far from its one-by-one twin as the spread between seeds
on a sensitive row, while the verdicts, decided over seeds, do not move
(tests/study/grouped_test.py).

Evaluation groups too (`evaluation_groups`): a seed's built models that
share one `apply_fn` and variables of the same shapes (one arch's original,
replicate, pruned and distilled models; a PTQ model of one bit width) run
each cell as one program vmapped over their stacked variables
(robustjax.study.evaluation, `Cell.run_many`): the same clean, corrupted
and transfer images for all, and every model attacked with its own
gradients from the same starts. With it on, a seed's models are built
before its cells run, and are held in memory together.

`study.grouped`: "on", "off", or "auto": on for GPU and TPU, where one small
model fills a few per cent of the chip; off on CPU, where the cores are
already busy with one model and K stacked models gain nothing.
"""

import hashlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jnp

from robustjax.study import grid as grid_lib

Member = Tuple[grid_lib.ModelSpec, int]  # (spec, seed)
MODES = ("auto", "on", "off")
# Models evaluated by one program at most (their activations, and attacks'
# images, grow with the number).
MAX_EVALUATED_TOGETHER = 16


def enabled(config, backend: Optional[str] = None) -> bool:
  """Whether `config.study.grouped` trains in groups on `backend`."""
  mode = config.study.get("grouped", "auto")
  if mode not in MODES:
    raise ValueError(f"config.study.grouped={mode!r} is not valid: use one "
                     f"of {MODES}.")
  if mode == "auto":
    return (backend or jax.default_backend()) != "cpu"
  return mode == "on"


def group_of(spec: grid_lib.ModelSpec) -> Optional[Tuple[str, ...]]:
  """The key of the training program `spec` shares, or None (built alone)."""
  if spec.method in ("original", "replicate"):
    return ("train", spec.arch)
  st = spec.settings
  if spec.method == "distill_control":  # Plain cross-entropy, no teacher.
    return ("control", spec.arch)
  if spec.method == "distill":  # Each member brings its own teacher.
    return ("distill", spec.arch, str(st.get("alpha")),
            str(st.get("teacher")))
  if (spec.method == "prune" and st.get("schedule") == "oneshot" and
      not st.get("structured")):
    return ("prune", spec.arch, st.get("scope", "global"))
  return None


def needed(by_id: Dict[str, grid_lib.ModelSpec],
           pending: Iterable[Member]) -> Set[Tuple[str, int]]:
  """(model_id, seed) of the models that `pending` cells need built:
  their own models and every model those are made from."""
  out = set()
  stack = [(spec.model_id, seed) for spec, seed in pending]
  while stack:
    key = stack.pop()
    if key in out:
      continue
    out.add(key)
    spec = by_id[key[0]]
    stack += [(i, key[1]) for i in (spec.base_id, spec.original_id)
              if i is not None and i != spec.model_id]
  return out


def groups(specs: Sequence[grid_lib.ModelSpec], seeds: Sequence[int],
           wanted: Set[Tuple[str, int]],
           is_built: Callable[[grid_lib.ModelSpec, int], bool]
           ) -> List[List[Member]]:
  """The groups to train, trainings (originals) before fine-tunes.

  Only models in `wanted` and not yet built join; a group of one is left to
  the sequential path.
  """
  by_key: Dict[Tuple[str, ...], List[Member]] = {}
  for spec in specs:
    key = group_of(spec)
    if key is None:
      continue
    for seed in seeds:
      if (spec.model_id, seed) in wanted and not is_built(spec, seed):
        by_key.setdefault(key, []).append((spec, seed))
  order = sorted(by_key, key=lambda k: k[0] != "train")  # Stable: the
  # originals (teachers, bases) first, then their compressed models.
  return [by_key[k] for k in order if len(by_key[k]) > 1]


def folder_name(members: Sequence[Member]) -> str:
  """A group's folder name: its program and a hash of its members (a rerun
  with other members left to build starts a fresh group checkpoint)."""
  key = group_of(members[0][0])
  digest = hashlib.sha1("\n".join(sorted(
      f"{s.model_id}|s{seed}" for s, seed in members)).encode()).hexdigest()
  return "-".join(key).replace(":", "w").replace("/", "_") + "-" + digest[:10]


def evaluation_groups(members: Sequence[Any]) -> List[List[Any]]:
  """`members` (each with `.model`, a built model) in groups that one
  evaluation program serves: the same `apply_fn` object (one architecture
  and precision) and variables of the same structure, shapes and dtypes
  (channel-pruned models differ), at most `MAX_EVALUATED_TOGETHER` each;
  in the order of their first member."""
  by_key: Dict[Any, List[Any]] = {}
  for m in members:
    leaves, tree = jax.tree.flatten(m.model.variables)
    key = (id(m.model.apply_fn), tree,
           tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
    by_key.setdefault(key, []).append(m)
  return [group[i:i + MAX_EVALUATED_TOGETHER] for group in by_key.values()
          for i in range(0, len(group), MAX_EVALUATED_TOGETHER)]
