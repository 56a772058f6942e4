r"""Sweep: ResNet-8 on digits at 4 global-magnitude sparsities x 2 seeds.

  python launch/sweep.py --config=configs/digits_sweep.py --workdir=/tmp/dsw

Every point trains in `/tmp/dsw/<point>/` (e.g. `seed=1,sparsity=0.75/`);
`/tmp/dsw/sweep.jsonl` records each point's status and final metrics, and
rerunning the command skips finished points. With `sweep.vmap` (default) the
8 points differ only in seed and sparsity, so they train as ONE vmapped
program of 8 models; `--config.sweep.vmap=False` trains them one by one.

Pruning here is one-shot global magnitude pruning of the initial weights
(kernels only), masks fixed during training. To prune a trained model
instead, point `model.init` at its weights.

Arguments (after a colon): `model=resnet8`, `width=8`, `epochs=8`,
`runlocal` (8 steps on 256 images per point: the smoke test).

Hardware / runtime / results: docs/scaling.md ("vmapped sweeps"), measured
with this exact command on a 2-core CPU.
"""

import ml_collections

from configs import common

SEEDS = (0, 1)
SPARSITIES = (0.0, 0.5, 0.75, 0.9)


def get_config(arg=None):
  """Returns the base config of every point; `arg` as in the module doc."""
  arg = common.parse_arg(arg, model="resnet8", width=8, epochs=8.0,
                         runlocal=False)
  c = common.get_base_config()
  c.dataset.name = "digits"
  c.dataset.source = "mnist"
  c.dataset.targets = ("uci",)
  c.dataset.image_size = 16
  c.model.name = arg.model
  c.model.width = arg.width
  c.batch_size = 64
  c.num_epochs = arg.epochs
  c.log_every_steps = 100
  c.checkpoint_every_steps = 250

  c.pruning = ml_collections.ConfigDict()
  c.pruning.sparsity = 0.0  # Global magnitude sparsity of kernels; 0 = dense.

  c.sweep = ml_collections.ConfigDict()
  c.sweep.vmap = True  # Train points differing in seed/sparsity as one program.
  c.sweep.max_models = 8  # Models per vmapped program (memory bound).
  if arg.runlocal:
    common.runlocal_overrides(c)
  return c


def sweep(add):
  """The sweep: every sparsity for every seed (8 points)."""
  for seed in SEEDS:
    for sparsity in SPARSITIES:
      add(**{"seed": seed, "pruning.sparsity": sparsity})


def metrics():
  """Headline numbers of the sweep summary."""
  return ["test_accuracy", "target/uci_accuracy"]
