"""Office-31 (Saenko et al. 2010) as a tfds builder over a manual download.

Office-31 has three domains of the same 31 office-object classes: `amazon`
(2,817 product photos), `dslr` (498) and `webcam` (795). No download
mirror is maintained (the paperswithcode page that pointed to one shut down
in 2025): bring the standard archive, `domain_adaptation_images.tar.gz`,
yourself (see BUILD.md, "Office-31") and extract it so that one of these
exists:

    MANUAL_DIR/domain_adaptation_images/amazon/images/back_pack/frame_0001.jpg
    MANUAL_DIR/amazon/images/back_pack/frame_0001.jpg

`MANUAL_DIR` is `config.dataset.manual_dir` (default `DATA_DIR/downloads/
manual/office31`). Each domain is one tfds `train` split holding all its
images; the registry derives fixed train/test sub-splits from it.

Protocol ("resize to 256, crop 224", as domain-adaptation code does it):
images are decoded with Pillow, converted to RGB and resized to 256x256
(bilinear; the aspect ratio is not kept) when the dataset is prepared. The
registry serves them at `image_size` (224 in the paper-scale configs) as the
center 224x224 crop for evaluation (`Split.images`), and training batches
(`pipeline.TrainBatches`) take a random 224x224 crop of the 256x256 image
(`Split.uncropped`). At another `image_size` the same geometry is scaled:
images are resized to `image_size * 256 / 224` first.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

DOMAINS = ("amazon", "dslr", "webcam")
CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator",
    "desk_chair", "desk_lamp", "desktop_computer", "file_cabinet",
    "headphones", "keyboard", "laptop_computer", "letter_tray",
    "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen",
    "phone", "printer", "projector", "punchers", "ring_binder", "ruler",
    "scissors", "speaker", "stapler", "tape_dispenser", "trash_can")
STORED_SIZE = 256  # Prepared size ("resize to 256").
CROP_SIZE = 224  # Crop used at the paper's resolution ("crop 224").
_INSTRUCTIONS = __doc__
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def domain_dir(manual_dir: str, domain: str) -> str:
  """Returns the `<domain>/images` folder inside `manual_dir`.

  Raises:
    FileNotFoundError: with the paths searched and how to get the data.
  """
  candidates = [os.path.join(manual_dir, "domain_adaptation_images", domain,
                             "images"),
                os.path.join(manual_dir, domain, "images")]
  for path in candidates:
    if os.path.isdir(path):
      return path
  raise FileNotFoundError(
      f"Office-31 domain {domain!r} not found. Looked for "
      f"{' and '.join(candidates)}. Office-31 cannot be downloaded "
      "automatically: bring domain_adaptation_images.tar.gz yourself (see "
      "BUILD.md, 'Office-31'), extract "
      f"it into {manual_dir} (or point config.dataset.manual_dir at the "
      "folder that holds it) and run again.")


class Office31(tfds.core.GeneratorBasedBuilder):
  """Office-31 from the manually downloaded folder layout (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d) for d in DOMAINS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS  # The module doc.

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=(STORED_SIZE, STORED_SIZE, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    root = domain_dir(os.fspath(dl_manager.manual_dir),
                      self.builder_config.name)
    return {"train": self._generate_examples(root)}

  def _generate_examples(self, root):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    unknown = sorted(set(os.listdir(root)) - set(CLASSES))
    if unknown:
      raise ValueError(f"Unexpected class folders {unknown} in {root}; "
                       f"Office-31 classes are {CLASSES}.")
    for label, name in enumerate(CLASSES):
      folder = os.path.join(root, name)
      if not os.path.isdir(folder):
        continue
      for fname in sorted(os.listdir(folder)):
        if not fname.lower().endswith(_EXTENSIONS):
          continue
        with Image.open(os.path.join(folder, fname)) as im:
          im = im.convert("RGB").resize((STORED_SIZE, STORED_SIZE),
                                        Image.BILINEAR)
          image = np.asarray(im, np.uint8)
        yield f"{name}/{fname}", {"image": image, "label": label}
