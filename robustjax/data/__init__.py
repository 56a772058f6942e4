"""Datasets by name (with domains) and the input pipeline."""

from robustjax.data.pipeline import augment
from robustjax.data.pipeline import eval_batches
from robustjax.data.pipeline import TrainBatches
from robustjax.data.registry import DATASETS
from robustjax.data.registry import get_spec
from robustjax.data.registry import load_split
from robustjax.data.registry import Split
