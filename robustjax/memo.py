"""`same_object_for_same_args`: a factory returns one object per argument set.

The trainer keys its jitted train steps on the recipe's `wrap_tx` and
`loss_fn` objects (`robustjax.train.trainer._jitted_step`); factories of
those (`compress.pruning.magnitude_pruner`, `default_prunable`,
`compress.distillation.make_loss_fn`) return the same object for the same
arguments, so trainings with the same settings share one compiled step.
Unhashable arguments (e.g. a list) skip the memo: a fresh object, correct
and only not shared.
"""

import functools
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def same_object_for_same_args(maxsize: int = 64) -> Callable[[F], F]:
  """Decorator: `functools.lru_cache` that tolerates unhashable arguments."""

  def decorate(factory: F) -> F:
    cached = functools.lru_cache(maxsize=maxsize)(factory)

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
      try:
        hash((args, tuple(sorted(kwargs.items()))))
      except TypeError:
        return factory(*args, **kwargs)
      return cached(*args, **kwargs)

    wrapper.cache_clear = cached.cache_clear
    return wrapper

  return decorate
