"""Compression: pruning, knowledge distillation, AQT quantization, size.

Functional pieces (`pruning`, `distillation`, `quantization`, `size`) plug
into the one trainer through `robustjax.train.Hooks`; `methods` turns a
trained model into compressed ones, each returned as
`(apply_fn, variables, metadata)` and saved with its metadata, and
`compress_all` runs a whole `config.compress`.
"""

from robustjax.compress import distillation
from robustjax.compress import pruning
from robustjax.compress import quantization
from robustjax.compress import size
from robustjax.compress.methods import compress_all
from robustjax.compress.methods import distill
from robustjax.compress.methods import load_compressed
from robustjax.compress.methods import original
from robustjax.compress.methods import prune_and_finetune
from robustjax.compress.methods import quantize
from robustjax.compress.methods import restore_trained
