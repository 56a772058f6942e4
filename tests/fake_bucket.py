"""A `gs://` bucket stand-in for tests: the real code paths, local bytes.

No test may reach Google Cloud Storage, yet code that takes `gs://` workdirs
must be exercised through the same calls it makes on a real bucket. Inside
`fake_gcs(root)`:

* `epath.Path("gs://b/x")` goes through etils' fsspec backend exactly as on a
  TPU VM with `gcsfs` installed; fsspec's `gs`/`gcs` protocol is served by a
  `DirFileSystem` over `root` (so `gs://b/x` is stored at `root/b/x`). Like an
  object store it refuses append and update modes (`"a"`, `"+"`), so code
  that appends to a "file" in a bucket fails here as it would there.
* Orbax takes its `gs://` branches (commit-file atomicity, no rename of the
  step folder, bucket-aware deletion); only TensorStore's transport is
  swapped: its `gcs` kvstore driver becomes the `file` driver on the same
  local folder, and the bucket reports a flat (non-HNS) namespace.

Used by tests/io_test.py, tests/checkpoint_test.py and the study's bucket
test. `local_path("gs://b/x")` gives the backing file, e.g. to damage it.
"""

import contextlib
import importlib
import os
from typing import Iterator
from unittest import mock

from etils.epath import backend as epath_backend
from etils.epath import gpath
import fsspec
from fsspec.implementations import dirfs
from fsspec.implementations import local
from orbax.checkpoint._src.path import gcs_utils

_PREFIXES = ("gs://", "gcs://")
# The module (`fsspec.registry` the attribute is a read-only mapping).
_FSSPEC_REGISTRY = importlib.import_module("fsspec.registry")


class _BucketFileSystem(dirfs.DirFileSystem):
  """fsspec `gs://` served from a local folder (`root`, set per context)."""

  protocol = ("gs", "gcs")
  root = None

  def __init__(self, *args, **kwargs):
    del args, kwargs  # gcsfs options such as finalize_on_close.
    super().__init__(path=self.root, fs=local.LocalFileSystem())

  @classmethod
  def _strip_protocol(cls, path):
    if isinstance(path, (list, tuple)):
      return [cls._strip_protocol(p) for p in path]
    path = os.fspath(path)
    for prefix in _PREFIXES:
      if path.startswith(prefix):
        path = path[len(prefix):]
    return path.rstrip("/")

  def open(self, path, mode="rb", **kwargs):  # pylint: disable=arguments-differ
    if "a" in mode or "+" in mode:
      raise NotImplementedError(
          f"Object stores cannot append to or update {path} (mode {mode!r}).")
    return super().open(path, mode, **kwargs)


def local_path(url: str, root: str) -> str:
  """The local file backing `url` (`gs://bucket/key`) under `root`."""
  for prefix in _PREFIXES:
    if url.startswith(prefix):
      return os.path.join(root, url[len(prefix):])
  raise ValueError(f"Not a bucket URL: {url}")


@contextlib.contextmanager
def fake_gcs(root: str) -> Iterator[str]:
  """Serves `gs://...` from folder `root` (created) while the context lasts.

  Args:
    root: local folder holding the buckets (`gs://b/x` -> `root/b/x`).

  Yields:
    `root`.
  """
  os.makedirs(root, exist_ok=True)
  fs_cls = type("BucketAt", (_BucketFileSystem,), {"root": root})
  registered = _FSSPEC_REGISTRY._registry  # pylint: disable=protected-access
  previous = {p: registered.get(p) for p in ("gs", "gcs")}

  def kvstore(path):  # TensorStore spec for a gs:// path: the local file.
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(root, bucket, key)}

  for p in ("gs", "gcs"):
    fsspec.register_implementation(p, fs_cls, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  try:
    with mock.patch.object(gpath, "_is_tf_installed", lambda: False), \
         mock.patch.object(gcs_utils, "get_kvstore_for_gcs", kvstore), \
         mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled",
                           lambda path: False):
      yield root
  finally:
    for p, cls in previous.items():
      if cls is None:
        registered.pop(p, None)
      else:
        fsspec.register_implementation(p, cls, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
