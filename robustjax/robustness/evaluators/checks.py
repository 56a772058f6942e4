"""Reading and checking fields of the `evals` block (ConfigDict or dict).

Every error is one sentence naming the field, its value and what is valid,
raised before any work (`evaluators.check_evals`).
"""

from typing import Mapping, Optional, Sequence

import numpy as np


def field(evals, path: str):
  """The field `path` ('batch_size', 'attacks.eps') of an `evals` block."""
  value = evals
  for part in path.split("."):
    try:
      value = value[part]
    except (KeyError, TypeError):
      raise ValueError(f"evals.{path} is missing; the evals block needs "
                       "every field of the base config's evals block."
                       ) from None
  return value


def is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(
      value, (bool, np.bool_))


def check_bool(evals, path: str):
  value = field(evals, path)
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"evals.{path}={value!r} must be True or False.")


def check_positive_int(evals, path: str):
  value = field(evals, path)
  if not is_int(value) or value <= 0:
    raise ValueError(f"evals.{path}={value!r} must be a positive integer.")


def check_max_examples(evals, path: str):
  value = field(evals, path)
  if not is_int(value) or value == 0 or value < -1:
    raise ValueError(f"evals.{path}={value!r} must be -1 (all examples) or "
                     "a positive number of examples.")


def check_choice(evals, path: str, valid: Sequence[str]):
  value = field(evals, path)
  if not isinstance(value, str) or value not in valid:
    raise ValueError(f"evals.{path}={value!r} is not one of "
                     f"{', '.join(valid)}.")


def sequence(evals, path: str, example: str) -> tuple:
  """The tuple (or list) field `path`; a string or scalar is an error."""
  value = field(evals, path)
  if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
    raise ValueError(f"evals.{path}={value!r} must be a tuple, e.g. "
                     f"--config.evals.{path}=\"{example}\".")
  return tuple(value)


def expand(names: Sequence[str],
           presets: Optional[Mapping[str, Sequence[str]]] = None) -> tuple:
  """`names` with every preset name replaced by the names it stands for."""
  presets = presets or {}
  return tuple(n for name in names for n in presets.get(name, (name,)))


def check_names(evals, path: str, valid: Sequence[str], what: str,
                presets: Optional[Mapping[str, Sequence[str]]] = None):
  """Checks a tuple of names, each in `valid` or a key of `presets`.

  Args:
    evals: the `evals` block.
    path: the field, e.g. 'corruptions.names'.
    valid: the registered names.
    what: what a name names, for the message ('corruption').
    presets: names that stand for several names (`expand`), e.g.
      `corruptions.PRESETS`.

  Raises:
    ValueError: a string instead of a tuple, an unknown name (the message
      lists the valid ones), or a name listed twice once presets are
      expanded.
  """
  presets = presets or {}
  names = sequence(evals, path, f"('{valid[0]}',)")
  for name in names:
    if name not in valid and name not in presets:
      sets = "".join(f", or {p} for the {len(v)} {p} {what}s"
                     for p, v in presets.items())
      raise ValueError(f"evals.{path} names an unknown {what} {name!r}; "
                       f"valid names: {', '.join(valid)}{sets}.")
  expanded = expand(names, presets)
  for name in expanded:
    if expanded.count(name) > 1:
      raise ValueError(f"evals.{path}={names!r} lists {name!r} twice.")
