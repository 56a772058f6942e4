"""Model zoo: ResNet v1 family with injectable ops, registered by name."""

from robustjax.models.registry import get_model
from robustjax.models.registry import inference_fn
from robustjax.models.registry import MODELS
from robustjax.models.resnet import ResNet
