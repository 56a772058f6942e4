"""The training state: everything a run needs to resume, in one pytree."""

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """All training state (Flax imagenet / Scenic style).

  Attributes:
    step: number of optimizer updates applied.
    params: model parameters.
    batch_stats: BatchNorm running statistics.
    opt_state: optax state.
    rng: raw uint32 PRNG key; each step folds in `step`.
    masks: pruning masks shaped like `params` (1 = kept), or None. An
      optax wrapper keeps masked weights exactly zero (robustjax.compress).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  masks: Optional[Any] = None

  @property
  def variables(self):
    """The model's variables for `apply` (params + batch statistics)."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def create(params, batch_stats, tx, rng, masks=None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=rng, masks=masks)
