"""Transfer attacks: adversarial examples crafted on a source model.

A compressed model can look robust because its gradients are useless
(gradient masking, e.g. quantization without a straight-through estimator).
The check: craft the attack on the float original (the *source*) and
evaluate the compressed model on those images. If the transfer attack fools
it more often than the white-box attack on itself, beyond sampling noise,
its white-box numbers are not to be trusted (robustjax.study.claims flags
it).

A transfer cell mirrors a white-box attack cell (same examples, eps grid,
starts) under the name `transfer_<attack>`. The adversarial images of a
source are computed once and reused for every model evaluated against it;
inside `keep_source_images` (the study runner, while it evaluates a float
original) they are the source's own white-box images, so the source is not
attacked twice.
As in the white-box cell, eps = 0 is no attack: that row classifies the
unmodified images exactly as the clean cell does.
"""

import collections
import dataclasses
from typing import Any, Callable, List, Sequence

import jax
import numpy as np

from robustjax.robustness.evaluators import attack as attack_lib
from robustjax.robustness.evaluators import base

_ADVERSARIAL = collections.OrderedDict()  # (source, cell) -> images [E, n].
# Sources x attack cells of one seed (the runner forgets them between seeds):
# a few MB in the default study; each entry is float32 [eps > 0, n, H, W, C]
# (~1.4 GB for Office-31's 563 test images at 224 px and 4 radii).
_KEEP = 32


def _cache_key(source_key: str, white_box) -> tuple:
  """Where the images of `white_box`'s attack on a source are cached."""
  return (source_key, white_box.key, white_box.levels)


def _remember(cache_key, images: np.ndarray) -> None:
  _ADVERSARIAL[cache_key] = images
  _ADVERSARIAL.move_to_end(cache_key)
  while len(_ADVERSARIAL) > _KEEP:
    _ADVERSARIAL.popitem(last=False)


def keep_source_images(source_key: str, apply_fn: Callable, variables: Any):
  """Context: white-box attack cells run on this source fill the cache.

  The transfer cells of `cells(..., source_key, apply_fn, variables)` then
  find their images without attacking the source again. Leaving the
  context stops the recording; what was kept stays until `forget()` or
  eviction.
  """
  def store(cell, images):
    _remember(_cache_key(source_key, cell), np.asarray(images))
  return attack_lib.keep_images(apply_fn, variables, store)


def forget() -> None:
  """Drops every cached source image (e.g. when a study's seed is done)."""
  _ADVERSARIAL.clear()


def adversarial_images(apply_fn: Callable, variables: Any, cell,
                       mesh: jax.sharding.Mesh = None) -> np.ndarray:
  """`cell`'s attack on the source, float32 [E, n, H, W, C], eps > 0 only.

  The white-box cell's own attack program and chunks
  (`attack.adversarial_images`): the same images as the white-box cell of
  the source model, from the same compiled program.
  """
  split = cell.split
  eps = np.asarray([e for e in cell.levels if e > 0], np.float32)
  if not eps.size:
    return np.zeros((0,) + split.images.shape, np.float32)
  return attack_lib.adversarial_images(apply_fn, variables, split.images,
                                       split.labels, cell.rng, eps,
                                       cell.attack, cell.chunk_size, mesh,
                                       cell.staged)


@dataclasses.dataclass(frozen=True, eq=False)
class TransferCell(base.Cell):
  """Correctness on adversarial examples crafted on `source_key`'s model.

  Attributes:
    white_box: the attack cell this one mirrors.
    source_key: names the source model (e.g. its model id and seed); the
      adversarial images are cached under it.
    source_apply, source_variables: the source model.
    batch_size: evaluation batch.
  """
  white_box: attack_lib.AttackCell = dataclasses.field(repr=False)
  source_key: str
  source_apply: Callable = dataclasses.field(repr=False)
  source_variables: Any = dataclasses.field(repr=False)
  batch_size: int

  def example_shape(self) -> tuple:
    return tuple(self.white_box.split.images.shape[1:])

  def correct(self, apply_fn: Callable, variables: Any,
              mesh: jax.sharding.Mesh = None) -> np.ndarray:
    return self.correct_many(apply_fn, [variables], mesh)[0]

  def correct_many(self, apply_fn: Callable, variables: Sequence[Any],
                   mesh: jax.sharding.Mesh = None) -> np.ndarray:
    """bool [K, E, n]: K models on the source's adversarial images."""
    cache_key = _cache_key(self.source_key, self.white_box)
    if cache_key not in _ADVERSARIAL:
      _remember(cache_key, adversarial_images(
          self.source_apply, self.source_variables, self.white_box, mesh))
    else:
      _ADVERSARIAL.move_to_end(cache_key)
    split = self.white_box.split
    zero = np.asarray(self.levels) == 0
    out = np.zeros((len(variables), len(self.levels), self.n), bool)
    if zero.any():
      out[:, zero] = base.clean_correct_many(
          apply_fn, variables, split.images, split.labels, self.batch_size,
          mesh)[:, None]
    if not zero.all():
      out[:, ~zero] = base.clean_correct_levels_many(
          apply_fn, variables, _ADVERSARIAL[cache_key], split.labels,
          self.batch_size, mesh)
    return out


def transfer_name(attack_name: str) -> str:
  return f"transfer_{attack_name}"


def cells(attack_cells: List[base.Cell], source_key: str,
          source_apply: Callable, source_variables: Any,
          batch_size: int = 500) -> List[TransferCell]:
  """One transfer cell per white-box attack cell, from one source model."""
  return [TransferCell("adversarial", transfer_name(c.name), c.levels, c.n,
                       c, source_key, source_apply, source_variables,
                       batch_size)
          for c in attack_cells if isinstance(c, attack_lib.AttackCell)]
