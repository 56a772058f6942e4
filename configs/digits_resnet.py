r"""ResNet-20 on the embedded digits benchmark: MNIST-5k -> UCI digits.

  python launch/train.py --config=configs/digits_resnet.py --workdir=/tmp/dig

Arguments (after a colon): `model=resnet20`, `width=8`, `epochs=8`, `runlocal`.

Hardware / runtime / results: see the table in README.md ("Training
baselines"), measured with this exact command on a 2-core CPU.
"""

from configs import common


def get_config(arg=None):
  """Returns the config; `arg` is `key=value,...` (see module doc)."""
  arg = common.parse_arg(arg, model="resnet20", width=16, epochs=8.0,
                         runlocal=False)
  c = common.digits_config(arg.model, arg.width, arg.epochs)
  if arg.runlocal:
    common.runlocal_overrides(c)
  return c
