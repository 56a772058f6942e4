r"""ImageNet-style ResNet on Office-31: train on a source domain, test on the
other two (needs the manually downloaded Office-31 folder, see BUILD.md).

  python launch/train.py --config=configs/office31_resnet.py:source=amazon \
      --workdir=/tmp/o31_a
  # From ImageNet weights (torchvision layout, see docs/pretrained.md):
  python launch/train.py \
      --config=configs/office31_resnet.py:source=amazon,init=/w/resnet50.safetensors \
      --workdir=/tmp/o31_a_pre

Arguments: `model=resnet50|resnet18|...`, `source=amazon|dslr|webcam`,
`init=PATH` (pretrained weights), `manual_dir=PATH`, `data_dir=PATH`,
`epochs=20`, `runlocal`.

Protocol (robustjax's own, as is usual for Office-31): train on every image of
the source domain (`full` split), evaluate on every image of each target
domain; images resized to 256x256 when the dataset is prepared, models run at
224 px with random 224 crops of the 256 px images and flips. SGD momentum 0.9, lr 0.01
(pretrained) or 0.1 (scratch), wd 5e-4, cosine, batch 32. Not run here: no
Office-31 data or accelerator on the dev machine; smoke-tested on a generated
folder of JPEGs.
"""

from configs import common

_DOMAINS = ("amazon", "dslr", "webcam")


def get_config(arg=None):
  """Returns the config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, model="resnet50", source="amazon", init="",
                         manual_dir="", data_dir="", epochs=20.0,
                         runlocal=False)
  if arg.source not in _DOMAINS:
    raise ValueError(f"source={arg.source!r}; Office-31 domains are "
                     f"{', '.join(_DOMAINS)}.")
  c = common.get_base_config()
  c.dataset.name = "office31"
  c.dataset.source = arg.source
  c.dataset.targets = tuple(d for d in _DOMAINS if d != arg.source)
  c.dataset.train_split = "full"
  c.dataset.test_split = "full"
  c.dataset.target_split = "full"
  c.dataset.image_size = 224
  c.dataset.crop_padding = 0  # TrainBatches takes random 224 crops of 256.
  c.dataset.flip = True
  c.dataset.manual_dir = arg.manual_dir
  c.dataset.data_dir = arg.data_dir
  c.model.name = arg.model
  c.model.width = 64
  c.model.init = arg.init
  c.optimizer.learning_rate = 0.01 if arg.init else 0.1
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = arg.epochs
  c.checkpoint_every_steps = 500
  if arg.runlocal:
    common.runlocal_overrides(c)
    c.model.name = "resnet18"
    c.model.width = 8
    c.dataset.image_size = 32
    c.batch_size = 8
    c.eval_batch_size = 16
  return c
