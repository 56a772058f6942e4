"""Reading and checking fields of the `evals` block (ConfigDict or dict).

Every error is one sentence naming the field, its value and what is valid,
raised before any work (`evaluators.check_evals`).
"""

from typing import Sequence

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


def check_names(evals, path: str, valid: Sequence[str], what: str):
  names = sequence(evals, path, f"('{valid[0]}',)")
  for name in names:
    if name not in valid:
      raise ValueError(f"evals.{path} names an unknown {what} {name!r}; "
                       f"valid names: {', '.join(valid)}.")
    if names.count(name) > 1:
      raise ValueError(f"evals.{path}={names!r} lists {name!r} twice.")
