"""Compression: pruning, distillation, quantization, size; recipes."""

from robustjax.compress import distillation
from robustjax.compress import pruning
from robustjax.compress import quantization
from robustjax.compress import recipes
from robustjax.compress import saved
from robustjax.compress import size
