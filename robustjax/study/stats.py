"""Paired hierarchical bootstrap over seeds and examples, in JAX.

The study's comparisons are paired: two models are scored on the same test
examples and trained with the same seeds, so their difference is resampled
as a unit. One replicate of `bootstrap_means`:

1. draws the seeds with replacement (S draws from the S seeds), and
2. draws the examples with replacement *within each example set* (a set is a
   block of consecutive rows of `x`: e.g. the source test split, or one
   target domain), once per replicate and shared by every seed and channel.

Drawing the examples once per replicate (not once per drawn seed) follows the
design: every seed sees the same test images, so seeds and examples are
crossed factors, not nested ones, and the images' sampling error is common
to all seeds.

Every statistic is a *channel*: a column of per-example contributions whose
sum over a set's examples is the statistic (so a mean over n examples enters
as values / n). Stacking all channels (all models, clean and shifted) into
one array lets one jitted program resample every model of a claim with the
same seeds and examples, which is what pairs them. A replicate is a count
vector over examples (a scatter-add of the drawn indices) times the
[examples, seeds x channels] matrix: one matrix product per batch of
replicates, which is what keeps thousands of replicates cheap on a CPU.
Replicates run in vmapped chunks of 256. Their uniforms come from
fixed-shape blocks [256, 4096] keyed by (key, chunk, block), so the
random-number program is compiled once per process for data of any shape;
rows and channels are padded to bucketed sizes (zero rows form an extra,
inert example set) so that similar tables share one compiled program.

Intervals are percentile intervals of the replicates.
"""

import functools
import zlib
from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_REPLICATES = 2000
CONFIDENCE = 0.95
# Random draws come in blocks of [replicates, rows]; replicates are
# resampled (vmapped) in chunks of _BLOCK[0].
_BLOCK = (256, 4096)


class Estimate(NamedTuple):
  """A point estimate with its bootstrap interval."""
  value: float
  lo: float
  hi: float

  @property
  def sign(self) -> int:
    """+1 if the interval lies above zero, -1 if below, 0 otherwise."""
    if self.lo > 0:
      return 1
    if self.hi < 0:
      return -1
    return 0


def key_for(seed: int, label: str) -> jax.Array:
  """A bootstrap key that depends only on `seed` and a stable `label`.

  Args:
    seed: the user's bootstrap seed.
    label: names the resampled data (e.g. the shift type), so that two
      analyses of the same data use the same draws whatever order they run
      in.

  Returns:
    A typed `jax.random.key`.
  """
  return jax.random.fold_in(jax.random.key(seed),
                            zlib.crc32(label.encode()) & 0x7FFFFFFF)


def _bucket(n: int) -> int:
  """`n` rounded up to one of 8 sizes per octave (at most 1/8 more)."""
  step = 1 << max(0, n.bit_length() - 4)
  return -(-n // step) * step


def _set_layout(set_sizes: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
  """Per row: the first row of its set and the set's size."""
  sizes = np.asarray(set_sizes, np.int32)
  if sizes.ndim != 1 or sizes.size == 0 or (sizes <= 0).any():
    raise ValueError(f"set_sizes must be a non-empty list of positive "
                     f"integers, got {list(set_sizes)}.")
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
  return np.repeat(starts, sizes), np.repeat(sizes, sizes)


@jax.jit
def _uniform_block(key, chunk, block):
  """Uniforms [replicates, columns] of one fixed-shape block of the draws."""
  k = jax.random.fold_in(jax.random.fold_in(key, chunk), block)
  return jax.random.uniform(k, _BLOCK)


def _uniforms(key: jax.Array, chunk: int, width: int) -> np.ndarray:
  """The uniforms of replicate chunk `chunk`: [_BLOCK[0], width].

  Built from fixed-shape blocks, so the random-number program is compiled
  once per process whatever the data's shape.
  """
  blocks = [np.asarray(_uniform_block(key, chunk, b))
            for b in range(-(-width // _BLOCK[1]))]
  return np.concatenate(blocks, axis=1)[:, :width]


@functools.partial(jax.jit, static_argnames=("num_seeds",))
def _replicate_chunk(flat, starts, sizes, u, num_seeds):
  """[replicates, channels] for one chunk of uniforms u [replicates, n + S].

  Each replicate's first n uniforms pick one row within each row's example
  set (so every set keeps its size); the last S pick the seeds.
  """
  n = flat.shape[0]

  def one(v):
    idx = starts + jnp.minimum((v[:n] * sizes).astype(jnp.int32), sizes - 1)
    counts = jnp.zeros((n,), flat.dtype).at[idx].add(1.0)
    per_seed = (counts @ flat).reshape(num_seeds, -1)
    drawn = jnp.minimum((v[n:] * num_seeds).astype(jnp.int32), num_seeds - 1)
    seed_counts = jnp.zeros((num_seeds,), flat.dtype).at[drawn].add(1.0)
    return seed_counts @ per_seed / num_seeds

  return jax.vmap(one)(u)


def bootstrap_means(x: np.ndarray, set_sizes: Sequence[int], key: jax.Array,
                    num_replicates: int = DEFAULT_REPLICATES
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Point estimates and bootstrap replicates of seed-averaged channel sums.

  Args:
    x: [examples, seeds, channels] per-example contributions; a channel's
      value for one seed is its sum over the examples (divide by the set size
      beforehand for a mean). Rows are grouped into consecutive example sets.
    set_sizes: the number of rows of each example set, in order; they must
      add up to `x.shape[0]`.
    key: a `jax.random.key` (see `key_for`); the same key gives the same
      replicates.
    num_replicates: number of bootstrap replicates B.

  Returns:
    (point [channels], replicates [B, channels]): the mean over seeds of each
    channel's sum on the data as observed, and the same on B resampled data
    sets (seeds, then examples within each set, drawn with replacement).
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 3:
    raise ValueError(f"x must be [examples, seeds, channels], got shape "
                     f"{x.shape}.")
  starts, sizes = _set_layout(set_sizes)
  if starts.size != x.shape[0]:
    raise ValueError(f"set_sizes add up to {starts.size} rows but x has "
                     f"{x.shape[0]}.")
  if num_replicates < 1:
    raise ValueError(f"num_replicates must be >= 1, got {num_replicates}.")
  point = x.sum(axis=0).mean(axis=0)
  # Pad rows (as one extra all-zero set) and channels to a few bucketed
  # sizes, so that tables of similar shape share one compiled program.
  n, s, c = x.shape
  n_pad, c_pad = _bucket(n + 1) - n, _bucket(max(c, 16)) - c
  x = np.pad(x, ((0, n_pad), (0, 0), (0, c_pad)))
  starts = np.concatenate([starts, np.full(n_pad, n, np.int32)])
  sizes = np.concatenate([sizes, np.full(n_pad, n_pad, np.int32)])
  flat = jnp.asarray(x.reshape(n + n_pad, -1), jnp.float32)
  starts, sizes = jnp.asarray(starts), jnp.asarray(sizes)
  reps = [np.asarray(_replicate_chunk(
      flat, starts, sizes, _uniforms(key, i, n + n_pad + s), num_seeds=s))
          for i in range(-(-num_replicates // _BLOCK[0]))]
  return point, np.concatenate(reps)[:num_replicates, :c]


def interval(point: np.ndarray, replicates: np.ndarray,
             confidence: float = CONFIDENCE) -> Tuple[np.ndarray, np.ndarray,
                                                      np.ndarray]:
  """Percentile interval per column of `replicates` ([B, ...]).

  Args:
    point: the point estimates, shape `replicates.shape[1:]`.
    replicates: bootstrap replicates, replicate axis first. A NaN replicate
      (e.g. a ratio with a zero denominator) makes that interval NaN.
    confidence: coverage of the two-sided interval.

  Returns:
    (point, lo, hi) as float64 arrays.
  """
  tail = 100 * (1 - confidence) / 2
  lo, hi = np.percentile(np.asarray(replicates, np.float64),
                         [tail, 100 - tail], axis=0)
  return np.asarray(point, np.float64), lo, hi


def estimates(point: np.ndarray, replicates: np.ndarray,
              confidence: float = CONFIDENCE) -> list:
  """`interval` as a list of `Estimate`s (one per column)."""
  p, lo, hi = interval(point, replicates, confidence)
  return [Estimate(float(a), float(b), float(c))
          for a, b, c in zip(np.ravel(p), np.ravel(lo), np.ravel(hi))]


def paired_mean_difference(diff: np.ndarray, key: jax.Array,
                           num_replicates: int = DEFAULT_REPLICATES,
                           confidence: float = CONFIDENCE) -> list:
  """Mean of per-example paired differences with bootstrap intervals.

  Args:
    diff: [examples, K] per-example differences of K paired comparisons on
      one example set and one seed (e.g. PGD-correct minus FGSM-correct).
    key: a `jax.random.key`.
    num_replicates: number of bootstrap replicates.
    confidence: coverage of the interval.

  Returns:
    K `Estimate`s of the mean difference.
  """
  diff = np.asarray(diff, np.float64)
  if diff.ndim == 1:
    diff = diff[:, None]
  n = diff.shape[0]
  point, reps = bootstrap_means(diff[:, None, :] / n, [n], key,
                                num_replicates)
  return estimates(point, reps, confidence)
