"""The training state: everything a run needs to resume, in one pytree."""

from typing import Any

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
    opt_state: optax state (pruning masks live here, see
      robustjax.compress.pruning.wrap_optax).
    rng: raw uint32 PRNG key; each step folds in `step`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self):
    """The model's variables for `apply` (params + batch statistics)."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def create(params, batch_stats, tx, rng) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=rng)
