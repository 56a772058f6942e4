"""The splits a config asks for: `load_data(config)`."""

from typing import Dict, Tuple

from robustjax.data import registry


def _cap(n: int):
  return None if n < 0 else n


def load_data(config) -> Tuple[registry.Split, Dict[str, registry.Split]]:
  """Returns (train split, {"test": ..., "target/<domain>": ...}).

  Args:
    config: reads `config.dataset` (name, source, targets, splits, image
      size, data/manual dirs, example caps, allow_partial).
  """
  d = config.dataset
  kw = dict(image_size=d.image_size, data_dir=d.data_dir or None,
            manual_dir=d.manual_dir or None,
            allow_partial=bool(d.get("allow_partial", False)))
  source = d.source or registry.get_spec(d.name).domains[0]
  train = registry.load_split(d.name, source, d.train_split,
                              max_examples=_cap(d.max_train_examples), **kw)
  evals = {"test": registry.load_split(
      d.name, source, d.test_split, max_examples=_cap(d.max_eval_examples),
      **kw)}
  for target in d.targets:
    evals[f"target/{target}"] = registry.load_split(
        d.name, target, d.target_split,
        max_examples=_cap(d.max_eval_examples), **kw)
  return train, evals
