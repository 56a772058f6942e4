"""Training: TrainState, optimizers, the one loop (single or K members)."""

from robustjax.train.state import TrainState
from robustjax.train.steps import cross_entropy
from robustjax.train.trainer import Member
from robustjax.train.trainer import Recipe
from robustjax.train.trainer import train_and_evaluate
from robustjax.train.trainer import train_members
