r"""CIFAR-style ResNet on CIFAR-10 (needs the tfds `cifar10` files).

  python launch/train.py --config=configs/cifar10_resnet.py --workdir=/tmp/c10
  python launch/train.py --config=configs/cifar10_resnet.py:runlocal \
      --workdir=/tmp/c10_smoke

Arguments: `model=resnet20|resnet56|...`, `width=16`, `epochs=182`,
`data_dir=PATH`, `runlocal`.

Recipe of He et al. (2016): SGD momentum 0.9, lr 0.1, wd 1e-4, batch 128,
random crop (pad 4) + flip. We use a cosine schedule instead of the step one.
Not run to completion here: no CIFAR-10 files can be fetched on the 2-core
CPU dev machine (one epoch of ResNet-20 there takes ~10 min); the smoke mode
is exercised by the tests on mocked tfds data.
"""

from configs import common


def get_config(arg=None):
  """Returns the config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, model="resnet20", width=16, epochs=182.0,
                         data_dir="", runlocal=False)
  c = common.get_base_config()
  c.dataset.name = "cifar10"
  c.dataset.image_size = 32
  c.dataset.data_dir = arg.data_dir
  c.dataset.crop_padding = 4
  c.dataset.flip = True
  c.model.name = arg.model
  c.model.width = arg.width
  c.optimizer.weight_decay = 1e-4
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = arg.epochs
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 100
  if arg.runlocal:
    common.runlocal_overrides(c)
  return c
