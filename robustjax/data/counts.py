"""A prepared copy of a dataset, counted and checked against its published sizes.

Every split of a prepared domain is counted from its files (`count_examples`)
and compared with the sizes its registry spec publishes
(`DatasetSpec.expected_counts`). `launch/prepare_data.py` checks every domain
it prepares (`check_counts`); the registry checks a custom builder's domain
(digits, Office-31) on every load (`check_prepared`), so a copy built from a
half-extracted folder is refused, naming the folder to delete, instead of
being used for good.

`spec` arguments are `robustjax.data.registry.DatasetSpec`s.
"""

from typing import Dict

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from robustjax.data import office31

Counts = Dict[str, Dict[str, int]]  # domain -> tfds split -> examples.


def _prepared_builder(spec, domain: str, data_dir: str):
  """The tfds builder of a prepared domain (its formats as recorded)."""
  return tfds.builder(spec.tfds_name(domain), data_dir=data_dir)


def count_examples(spec, domain: str, data_dir: str) -> Dict[str, int]:
  """{tfds split: examples} of a prepared domain, from its ArrayRecord files.

  Args:
    spec: the dataset's spec.
    domain: one of its domains.
    data_dir: the tfds data dir.

  Returns:
    The number of examples per split, as the files hold them.
  """
  builder = _prepared_builder(spec, domain, data_dir)
  return {split: len(builder.as_data_source(split=split))
          for split in sorted(builder.info.splits)}


def check_counts(spec, counts: Counts, data_dir: str,
                 manual_dir: str) -> None:
  """Raises ValueError naming every split with other counts than published.

  Args:
    spec: the dataset's spec.
    counts: `{domain: {split: n}}` as `count_examples` returns them.
    data_dir: the tfds data dir (named in the error).
    manual_dir: where a manual download was read from (named in the error).
  """
  expected = spec.expected_counts
  if expected is None:
    logging.info("%s: no published sizes to check against; counted %s.",
                 spec.name, counts)
    return
  problems = []
  for domain, splits in counts.items():
    for split, want in expected.get(domain, {}).items():
      got = splits.get(split, 0)
      if got == want:
        continue
      line = (f"{spec.name}/{domain} split {split!r} has {got:,} examples, "
              f"expected {want:,}")
      if got < want:
        line += f" ({want - got:,} missing)"
      if spec.name == "office31":
        line += _office31_missing_classes(spec, domain, data_dir)
      problems.append(line)
  if not problems:
    return
  advice = (f"The copy in {data_dir} is incomplete or not the standard one. ")
  if spec.name == "office31":
    advice += (
        f"Office-31 was built from the folder under {manual_dir}: check that "
        "domain_adaptation_images.tar.gz was extracted completely there "
        "(layout in BUILD.md, 'Office-31'), then rerun with --overwrite to "
        "build it again.")
  else:
    advice += "Rerun with --overwrite to build it again."
  raise ValueError("; ".join(problems) + ". " + advice)


def check_prepared(spec, domain: str, data_dir: str, manual_dir: str) -> None:
  """Refuses a prepared custom domain with other counts than published.

  Args:
    spec: the dataset's spec (a custom builder's: digits, office31).
    domain: the prepared domain.
    data_dir: the tfds data dir.
    manual_dir: the folder it was built from (named in the error).

  Raises:
    ValueError: one paragraph naming the splits and their counts, the
      prepared folder to delete and, for a deliberately partial folder,
      `config.dataset.allow_partial`.
  """
  if domain not in (spec.expected_counts or {}):
    return
  counts = {domain: count_examples(spec, domain, data_dir)}
  try:
    check_counts(spec, counts, data_dir, manual_dir)
  except ValueError as e:
    folder = _prepared_builder(spec, domain, data_dir).data_path
    raise ValueError(
        f"{e} The prepared copy {folder} is then incomplete: delete it (or "
        f"run launch/prepare_data.py --dataset={spec.name} --domains="
        f"{domain} --overwrite) once the folder is complete, and it is "
        "built again. To use a deliberately partial folder (a smoke test), "
        "set config.dataset.allow_partial=True.") from None


def _office31_missing_classes(spec, domain, data_dir) -> str:
  source = _prepared_builder(spec, domain, data_dir).as_data_source(
      split="train")
  labels = np.asarray([int(source[i]["label"]) for i in range(len(source))],
                      np.int64)
  counts = np.bincount(labels, minlength=len(office31.CLASSES))
  empty = [c for c, n in zip(office31.CLASSES, counts) if n == 0]
  if not empty:
    return ""
  return (f"; classes without images: {', '.join(empty)} ({len(empty)} of "
          f"{len(office31.CLASSES)})")
