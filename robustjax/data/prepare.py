"""Data preparation as one command: build or convert, then count.

`prepare(name, data_dir)` makes every domain of a registered dataset
readable by the suite (ArrayRecord files in `data_dir`, what
`tfds.data_source` reads without TensorFlow):

1. a domain already prepared in ArrayRecord is left as it is;
2. a domain prepared in TFRecord format (tfds' default, e.g. by an earlier
   `tfds build` or `tfds.load`) is converted in place, without TensorFlow or
   a new download: each shard's records are copied into an ArrayRecord shard
   beside it (as `tfds convert_format` does) and ArrayRecord becomes the
   dataset's main format (the TFRecord shards stay, listed as an alternative
   format; delete them to save space);
3. otherwise it is built: the custom builders (`digits`, `office31`) from
   the embedded data or the manual download, tfds catalogue datasets
   (`cifar10`, `cifar10_corrupted`, `domainnet`) by tfds itself, which needs
   TensorFlow and network for that one step.

Every split is then counted and checked against the published sizes
(`DatasetSpec.expected_counts`, robustjax.data.counts); a shortfall raises an
error that names the domain, the split, the numbers and, for Office-31, the
classes without images. In a multi-host run process 0 does the work while
the others wait (`registry.on_main_process`); run it once per host instead
when the data dir is not shared.

The same check guards every load of a custom builder's domain (digits,
Office-31: `counts.check_prepared`, called when the registry prepares a
domain or opens the prepared copy), so a copy converted from a half-extracted
folder is refused, naming the folder to delete, instead of being used for
good. A deliberately partial folder (a generated smoke-test folder) is
loaded with `config.dataset.allow_partial`, which the `runlocal` configs set.
"""

import importlib.util
import os
import struct
from typing import Iterator, Optional, Sequence

from absl import logging
from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_info as tfds_dataset_info
from tensorflow_datasets.core import file_adapters

from robustjax import io
from robustjax.data import counts as counts_lib
from robustjax.data import registry

_ARRAY_RECORD = file_adapters.FileFormat.ARRAY_RECORD


def prepare(name: str, data_dir: Optional[str] = None,
            manual_dir: Optional[str] = None,
            domains: Optional[Sequence[str]] = None,
            overwrite: bool = False) -> counts_lib.Counts:
  """Prepares (or converts) a dataset in ArrayRecord and checks its size.

  Args:
    name: registered dataset name (`registry.DATASETS`).
    data_dir: tfds data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: folder of manually downloaded archives (Office-31; default
      `data_dir/downloads/manual/<name>`).
    domains: the domains to prepare (default: all of the dataset's).
    overwrite: delete what is prepared for these domains and build again
      (e.g. after an incomplete Office-31 folder was fixed).

  Returns:
    {domain: {tfds split: number of examples}}.

  Raises:
    ValueError: unknown dataset/domain, or counts below the expected ones.
    RuntimeError: a catalogue dataset must be built but TensorFlow is
      missing, or the build failed (the tfds message is kept).
  """
  spec = registry.get_spec(name)
  domains = tuple(domains or spec.domains)
  unknown = [d for d in domains if d not in spec.domains]
  if unknown:
    raise ValueError(f"Dataset {name!r} has no domain(s) {unknown}; its "
                     f"domains are {', '.join(spec.domains)}.")
  data_dir = data_dir or registry.default_data_dir()
  manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual",
                                          name)

  def work():
    for domain in domains:
      _prepare_domain(spec, domain, data_dir, manual_dir, overwrite)

  registry.on_main_process(work, f"preparing {name} in {data_dir}")
  counts = {d: counts_lib.count_examples(spec, d, data_dir) for d in domains}
  counts_lib.check_counts(spec, counts, data_dir, manual_dir)
  return counts


def _prepare_domain(spec, domain, data_dir, manual_dir, overwrite):
  """Makes one domain available in ArrayRecord (see module doc)."""
  tfds_name = spec.tfds_name(domain)
  file_format = registry.prepared_format(tfds_name, data_dir)
  if file_format is not None and overwrite:
    folder = tfds.builder(tfds_name, data_dir=data_dir).data_path
    logging.info("Deleting %s (overwrite).", folder)
    folder.rmtree()
    file_format = None
  if file_format == "array_record":
    logging.info("%s: already prepared in ArrayRecord in %s.", tfds_name,
                 data_dir)
  elif file_format is not None:
    logging.info("%s: prepared in %s format; converting to ArrayRecord.",
                 tfds_name, file_format)
    convert_to_array_record(tfds.builder(tfds_name, data_dir=data_dir)
                            .data_path)
  elif spec.builder is not None:
    registry.prepare_custom(spec, domain, data_dir, manual_dir)
  else:
    _build_catalogue(spec, tfds_name, data_dir, manual_dir)


def _build_catalogue(spec, tfds_name, data_dir, manual_dir):
  """Builds a tfds catalogue dataset in ArrayRecord (TensorFlow needed)."""
  if importlib.util.find_spec("tensorflow") is None:
    raise RuntimeError(
        f"Building {tfds_name} needs TensorFlow (tfds' {spec.name} builder "
        "uses it to decode the download; reading the result does not). "
        "Install the CPU build, `pip install tensorflow-cpu==2.21.0` (about "
        "1.4 GB), and rerun; or prepare the dataset on another machine and "
        f"copy its folder into {data_dir}. Nothing was downloaded.")
  builder = tfds.builder(tfds_name, data_dir=data_dir,
                         file_format="array_record")
  logging.info("%s: building into %s (downloads what it needs).", tfds_name,
               data_dir)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"tfds could not build {tfds_name} in {data_dir}: "
                       f"{registry.tfds_error(e)}") from e


# ------------------------------------------------------ TFRecord -> ArrayRecord


def _crc32c_table():
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord frames use it (pure Python)."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecord(path: io.PathLike) -> Iterator[bytes]:
  """Yields the records of a TFRecord file without TensorFlow.

  Each frame is: length (uint64 LE), masked CRC-32C of the length, data,
  masked CRC-32C of the data. Lengths and their CRCs are checked (a cut or
  misaligned file fails loudly); data CRCs are not recomputed (slow in
  Python), the example counts are checked instead.

  Args:
    path: the TFRecord file.

  Yields:
    Each record's bytes (a serialized example).

  Raises:
    ValueError: if the file is truncated or not TFRecord.
  """
  with io.as_path(path).open("rb") as f:
    offset = 0
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated record header at byte {offset}.")
      length, length_crc = struct.unpack("<QI", header)
      if masked_crc32c(header[:8]) != length_crc:
        raise ValueError(f"{path}: bad record length CRC at byte {offset}; "
                         "not a TFRecord file, or damaged.")
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        raise ValueError(f"{path}: truncated record at byte {offset}.")
      offset += 16 + length
      yield data


def convert_to_array_record(dataset_dir: io.PathLike) -> int:
  """Converts a prepared TFRecord dataset version to ArrayRecord, in place.

  Resumable: each ArrayRecord shard is written under a temporary name and
  renamed when complete, and shards already there are kept.

  Args:
    dataset_dir: the version folder, `DATA_DIR/<name>[/<config>]/<version>`,
      holding `dataset_info.json` and the TFRecord shards.

  Returns:
    The number of examples converted.

  Raises:
    ValueError: if a shard holds another number of records than
      `dataset_info.json` says, or is damaged.
  """
  dataset_dir = epath.Path(io.as_path(dataset_dir))
  info_path = dataset_dir / "dataset_info.json"
  proto = tfds_dataset_info.read_from_json(info_path)
  in_format = proto.file_format or "tfrecord"
  if in_format == _ARRAY_RECORD.value:
    return 0
  in_splits = tfds_dataset_info.get_split_dict_from_proto(
      proto, dataset_dir, file_format=in_format)
  out_splits = tfds_dataset_info.get_split_dict_from_proto(
      proto, dataset_dir, file_format=_ARRAY_RECORD)
  adapter = file_adapters.ADAPTER_FOR_FORMAT[_ARRAY_RECORD]
  total = 0
  for split, split_info in in_splits.items():
    shards = zip(split_info.filepaths, out_splits[split].filepaths,
                 split_info.shard_lengths)
    for in_path, out_path, expected in shards:
      total += expected
      if out_path.exists():
        continue
      records = list(read_tfrecord(in_path))
      if len(records) != expected:
        raise ValueError(
            f"{in_path} holds {len(records)} records but "
            f"{info_path} says {expected}: the TFRecord copy is incomplete. "
            "Delete the folder and prepare the dataset again.")
      tmp = out_path.parent / f".tmp-{out_path.name}"
      adapter.write_examples(tmp, enumerate(records))
      tmp.rename(out_path)
      logging.info("Converted %s (%d examples).", out_path.name, expected)
  # ArrayRecord becomes the main format: tfds' code-based builders (as
  # `tfds.data_source` uses them) ignore `alternative_file_formats`.
  formats = [f for f in proto.alternative_file_formats
             if f != _ARRAY_RECORD.value]
  del proto.alternative_file_formats[:]
  proto.alternative_file_formats.extend(formats + [in_format])
  proto.file_format = _ARRAY_RECORD.value
  io.write_atomic(info_path, tfds_dataset_info.get_dataset_info_json(proto))
  return total
