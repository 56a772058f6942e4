r"""Sweep: ResNet-8 on digits at 4 global-magnitude sparsities x 2 seeds.

  python launch/sweep.py --config=configs/digits_sweep.py --workdir=/tmp/dsw

Every point trains in `/tmp/dsw/<point>/` (e.g. `seed=1,init_sparsity=0.75/`);
`/tmp/dsw/sweep.jsonl` records each point's status and final metrics, and
rerunning the command skips finished points. With `sweep.vmap` (default) the
8 points differ only in seed and sparsity, so they train as ONE vmapped
program of 8 models; `--vmap=false` trains them one by one (switching
modes between reruns is fine: finished points stay finished).

Pruning here is one-shot global magnitude pruning of the initial weights
(kernels only), masks fixed during training. To prune a trained model
instead, point `model.init` at its weights.

Arguments (after a colon): `model=resnet8`, `width=8`, `epochs=8`,
`runlocal` (8 steps on 256 images per point: the smoke test).

Measured with this exact command on a 2-core AMD EPYC CPU (jax 0.10.2):
52 s wall, 1.2 GB peak RSS vmapped (49 s, 0.9 GB with `--vmap=false`).
MNIST test / UCI target accuracy:

  seed  dense        50 %         75 %         90 %
  0     97.7 / 70.0  96.9 / 60.9  96.6 / 73.3  94.7 / 56.3
  1     97.6 / 72.9  97.1 / 57.3  97.2 / 52.5  95.2 / 45.9

UCI accuracy moves by several points between runs that differ only in float
rounding (vmapped or one by one); compare means over seeds.
"""

from configs import common

SEEDS = (0, 1)
SPARSITIES = (0.0, 0.5, 0.75, 0.9)


def get_config(arg=None):
  """Returns the base config of every point; `arg` as in the module doc."""
  arg = common.parse_arg(arg, model="resnet8", width=8, epochs=8.0,
                         runlocal=False)
  c = common.digits_config(arg.model, arg.width, arg.epochs)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 250

  if arg.runlocal:
    common.runlocal_overrides(c)
  return c


def sweep(add):
  """The sweep: every sparsity for every seed (8 points)."""
  for seed in SEEDS:
    for sparsity in SPARSITIES:
      add(**{"seed": seed, "compress.init_sparsity": sparsity})


def metrics():
  """Headline numbers of the sweep summary."""
  return ["test_accuracy", "target/uci_accuracy"]
