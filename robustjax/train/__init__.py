"""Training: TrainState, optimizers, checkpoints, the loop."""

from robustjax.train.trainer import build_model
from robustjax.train.trainer import cross_entropy
from robustjax.train.trainer import Hooks
from robustjax.train.trainer import load_data
from robustjax.train.trainer import train_and_evaluate
from robustjax.train.state import TrainState
