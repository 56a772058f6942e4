"""Tests for robustjax.models.pretrained (torchvision ResNet weights).

The reference is an independent numpy forward pass of the torchvision ResNet
(v1.5) written directly against the torch-layout state dict (OIHW kernels,
torch names), in float64. Weights and BN statistics are random; the models
are the true ResNet-18/50 layouts at a reduced width (8) on 64x64 images, so
the whole file runs in well under a minute on a 2-core CPU without torch. A
further check against real PyTorch runs only when torch is importable.

  python -m pytest tests/models/pretrained_test.py
"""

import json
import os
import shutil
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import numpy as st_numpy

from robustjax.models import pretrained
from robustjax.models import registry
from robustjax.models import torch_layout

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# torchvision: depth -> (blocks per stage, bottleneck?).
TORCHVISION = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False),
               50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True),
               152: ((3, 8, 36, 3), True)}


def torchvision_shapes(depth, width=64, num_classes=1000):
  """{name: shape} of torchvision's `resnet{depth}().state_dict()`.

  Written from torchvision/models/resnet.py (`inplanes`, `_make_layer`,
  `expansion`), independently of the converter's name mapping.
  """
  stages, bottleneck = TORCHVISION[depth]
  expansion = 4 if bottleneck else 1
  shapes = {}

  def bn(name, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.{leaf}"] = (c,)
    shapes[f"{name}.num_batches_tracked"] = ()

  shapes["conv1.weight"] = (width, 3, 7, 7)
  bn("bn1", width)
  inplanes = width
  for i, blocks in enumerate(stages, start=1):
    planes = width * 2**(i - 1)
    for j in range(blocks):
      p = f"layer{i}.{j}"
      if bottleneck:
        shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
        shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
        for k, c in ((1, planes), (2, planes), (3, planes * 4)):
          bn(f"{p}.bn{k}", c)
      else:
        shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
        shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        bn(f"{p}.bn1", planes)
        bn(f"{p}.bn2", planes)
      stride = 2 if i > 1 and j == 0 else 1
      if j == 0 and (stride != 1 or inplanes != planes * expansion):
        shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes,
                                              1, 1)
        bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  shapes["fc.weight"] = (num_classes, inplanes)
  shapes["fc.bias"] = (num_classes,)
  return shapes


def random_state_dict(depth, width=8, num_classes=10, seed=0):
  """Random torch-layout weights and BN statistics (float32)."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in torchvision_shapes(depth, width, num_classes).items():
    leaf = name.rsplit(".", 1)[1]
    if leaf == "num_batches_tracked":
      value = np.array(123, np.int64)
    elif len(shape) == 4:  # He-normal, so activations stay O(1).
      value = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
    elif name.startswith("fc."):
      value = rng.normal(0, 1 / np.sqrt(shape[-1]), shape)
    elif leaf == "weight":
      value = rng.uniform(0.3, 1.0, shape)
    elif leaf == "bias":
      value = rng.normal(0, 0.2, shape)
    elif leaf == "running_mean":
      value = rng.normal(0, 0.3, shape)
    else:  # running_var
      value = rng.uniform(0.5, 2.0, shape)
    out[name] = np.asarray(value, np.float32 if value.ndim else np.int64)
  return out


# ---------------------------------------------------------------------------
# Independent numpy reference: torchvision's forward pass on NCHW tensors.


def _conv(x, w, stride, pad):
  """torch.nn.functional.conv2d via an explicit im2col; x NCHW, w OIHW."""
  n, c, h, wd = x.shape
  o, _, kh, kw = w.shape
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho = (h + 2 * pad - kh) // stride + 1
  wo = (wd + 2 * pad - kw) // stride + 1
  cols = np.empty((n, c, kh, kw, ho, wo), x.dtype)
  for i in range(kh):
    for j in range(kw):
      cols[:, :, i, j] = x[:, :, i:i + stride * ho:stride,
                           j:j + stride * wo:stride]
  cols = cols.reshape(n, c * kh * kw, ho * wo)
  return (w.reshape(o, -1) @ cols).reshape(n, o, ho, wo)


def _bn(x, sd, name, eps=1e-5):
  g = lambda leaf: sd[f"{name}.{leaf}"].astype(np.float64)[None, :, None, None]
  return ((x - g("running_mean")) / np.sqrt(g("running_var") + eps) *
          g("weight") + g("bias"))


def _maxpool_3x3_s2_p1(x):
  n, c, h, w = x.shape
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  return np.max([x[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2]
                 for i in range(3) for j in range(3)], axis=0)


def reference_logits(sd, images_nhwc):
  """torchvision ResNet forward (eval mode) in float64 on images in [0, 1]."""
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  relu = lambda t: np.maximum(t, 0)
  x = np.transpose((images_nhwc - MEAN) / STD, (0, 3, 1, 2))
  x = relu(_bn(_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
  x = _maxpool_3x3_s2_p1(x)
  for i in range(1, 5):
    j = 0
    while f"layer{i}.{j}.conv1.weight" in sd:
      p, stride = f"layer{i}.{j}", 2 if i > 1 and j == 0 else 1
      if f"{p}.conv3.weight" in sd:  # Bottleneck, stride on the 3x3 (v1.5).
        y = relu(_bn(_conv(x, sd[f"{p}.conv1.weight"], 1, 0), sd, f"{p}.bn1"))
        y = relu(_bn(_conv(y, sd[f"{p}.conv2.weight"], stride, 1), sd,
                     f"{p}.bn2"))
        y = _bn(_conv(y, sd[f"{p}.conv3.weight"], 1, 0), sd, f"{p}.bn3")
      else:
        y = relu(_bn(_conv(x, sd[f"{p}.conv1.weight"], stride, 1), sd,
                     f"{p}.bn1"))
        y = _bn(_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = _bn(_conv(x, sd[f"{p}.downsample.0.weight"], stride, 0), sd,
                f"{p}.downsample.1")
      x = relu(x + y)
      j += 1
  x = x.mean(axis=(2, 3))
  return x @ sd["fc.weight"].T + sd["fc.bias"]


# ---------------------------------------------------------------------------


def _images(n=2, size=64, seed=1):
  return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(
      np.float32)


def _init(name, num_classes=10, width=8, size=64, seed=0):
  """The model and random stand-ins for its fresh variables.

  `model.init` compiles slowly on CPU (about 10 s per depth), so the fresh
  variables are random arrays of the shapes `jax.eval_shape` reports.
  """
  model = registry.get_model(name, num_classes=num_classes, width=width)
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(
      lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype), abstract)
  return model, variables


def _logits(model, variables, images):
  return np.asarray(jax.jit(model.apply)(variables, images))


class PretrainedTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # tempfile, not create_tempdir: that needs parsed absl flags (pytest).
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def _write(self, sd, name="w.safetensors"):
    path = os.path.join(self.dir, name)
    st_numpy.save_file(sd, path)
    return path

  @parameterized.parameters(18, 50)
  def test_logits_match_numpy_reference(self, depth):
    sd = random_state_dict(depth)
    model, fresh = _init(f"resnet{depth}")
    variables = pretrained.load_into(self._write(sd), fresh)
    images = _images()
    want = reference_logits(sd, images.astype(np.float64))
    got = _logits(model, variables, images)
    self.assertGreater(np.abs(want).max(), 0.1)  # Non-trivial logits.
    np.testing.assert_array_less(np.abs(got - want).max(), 1e-4)

  def test_safetensors_round_trip_is_exact(self):
    sd = random_state_dict(50, seed=3)
    _, fresh = _init("resnet50")
    variables = pretrained.load_into(self._write(sd), fresh)
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(params["conv_init"]["kernel"],
                                  sd["conv1.weight"].transpose(2, 3, 1, 0))
    block = params["stage2_block1"]
    np.testing.assert_array_equal(
        block["conv2"]["kernel"],
        sd["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        block["proj_conv"]["kernel"],
        sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(block["proj_bn"]["scale"],
                                  sd["layer2.0.downsample.1.weight"])
    np.testing.assert_array_equal(stats["stage4_block3"]["bn3"]["var"],
                                  sd["layer4.2.bn3.running_var"])
    np.testing.assert_array_equal(params["head"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(params["head"]["bias"], sd["fc.bias"])
    num_file = sum(v.size for k, v in sd.items()
                   if not k.endswith("num_batches_tracked"))
    self.assertEqual(sum(v.size for v in jax.tree.leaves(variables)),
                     num_file)

  @parameterized.parameters(18, 34, 50, 101, 152)
  def test_full_width_torchvision_layout(self, depth):
    # Zero-copy constant arrays with the exact torchvision shapes.
    sd = {k: np.broadcast_to(np.float32(0), s)
          for k, s in torchvision_shapes(depth).items()}
    converted, unrecognised = torch_layout.convert_state_dict(sd)
    self.assertEmpty(unrecognised)
    self.assertEqual(pretrained.describe(converted).name, f"resnet{depth}")
    model = registry.get_model(f"resnet{depth}", num_classes=1000)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    merged = pretrained.merge_into(converted, abstract)
    self.assertEqual(jax.tree.structure(merged), jax.tree.structure(abstract))

  def test_head_replacement_keeps_backbone_and_fresh_head(self):
    sd = random_state_dict(18, num_classes=1000)
    _, fresh = _init("resnet18", num_classes=31)
    with self.assertLogs(logger="absl", level="INFO") as logs:
      variables = pretrained.load_into(self._write(sd), fresh)
    self.assertIn("Head replacement", "\n".join(logs.output))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  fresh["params"]["head"]["kernel"])
    np.testing.assert_array_equal(variables["params"]["head"]["bias"],
                                  fresh["params"]["head"]["bias"])
    self.assertEqual(variables["params"]["head"]["kernel"].shape, (64, 31))
    # Every backbone tensor equals the file's and differs from the fresh one.
    _, same_classes = _init("resnet18", num_classes=1000)
    full = pretrained.load_into(self._write(sd, "b.safetensors"),
                                same_classes)
    for part in ("params", "batch_stats"):
      got = jax.tree_util.tree_leaves_with_path(variables[part])
      want = dict(jax.tree_util.tree_leaves_with_path(full[part]))
      init = dict(jax.tree_util.tree_leaves_with_path(fresh[part]))
      for path, leaf in got:
        if "head" in jax.tree_util.keystr(path):
          continue
        np.testing.assert_array_equal(leaf, want[path])
        self.assertFalse(np.array_equal(leaf, init[path]),
                         jax.tree_util.keystr(path))

  def test_backbone_only_file_keeps_fresh_head(self):
    sd = random_state_dict(18)
    del sd["fc.weight"], sd["fc.bias"]
    _, fresh = _init("resnet18")
    variables = pretrained.load_into(self._write(sd), fresh)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  fresh["params"]["head"]["kernel"])

  def test_mismatched_depth_names_both_architectures(self):
    path = self._write(random_state_dict(50))
    _, fresh = _init("resnet18")
    with self.assertRaisesRegex(ValueError, r"(?s)are resnet50 .*bottleneck.*"
                                r"expects resnet18 .*basic"):
      pretrained.load_into(path, fresh)

  def test_mismatched_width(self):
    path = self._write(random_state_dict(18, width=8))
    _, fresh = _init("resnet18", width=16)
    with self.assertRaisesRegex(ValueError,
                                "width 8 in the file vs 16 in the model"):
      pretrained.load_into(path, fresh)

  def test_cifar_model_is_rejected(self):
    path = self._write(random_state_dict(18))
    _, fresh = _init("resnet20", width=8, size=16)
    with self.assertRaisesRegex(ValueError, "CIFAR-style"):
      pretrained.load_into(path, fresh)

  def test_missing_and_unexpected_keys(self):
    sd = random_state_dict(18)
    del sd["layer3.1.bn2.running_var"]
    _, fresh = _init("resnet18")
    with self.assertRaisesRegex(
        ValueError, r"missing from the file: layer3\.1\.bn2\.running_var "
        r"\(batch_stats/stage3_block2/bn2/var\)"):
      pretrained.load_into(self._write(sd), fresh)
    sd = random_state_dict(18)
    sd["layer1.0.se.fc1.weight"] = np.zeros((2, 2), np.float32)
    with self.assertRaisesRegex(ValueError, "not part of a torchvision ResNet"
                                r".*layer1\.0\.se\.fc1\.weight"):
      pretrained.load_into(self._write(sd, "u.safetensors"), fresh)

  def test_shape_mismatch(self):
    sd = random_state_dict(18)
    sd["layer2.0.conv2.weight"] = sd["layer2.0.conv2.weight"][:, :, :1, :1]
    _, fresh = _init("resnet18")
    with self.assertRaisesRegex(
        ValueError, r"layer2\.0\.conv2\.weight .*: file \(1, 1, 16, 16\) vs "
        r"model \(3, 3, 16, 16\)"):
      pretrained.load_into(self._write(sd), fresh)

  def test_not_a_resnet(self):
    path = self._write({"encoder.weight": np.zeros((2, 2), np.float32)})
    _, fresh = _init("resnet18")
    with self.assertRaisesRegex(ValueError, "not a torchvision-layout ResNet"):
      pretrained.load_into(path, fresh)

  def test_pth_without_torch_says_how_to_install(self):
    path = os.path.join(self.dir, "w.pth")
    open(path, "wb").close()
    with mock.patch.dict(sys.modules, {"torch": None}):
      with self.assertRaisesRegex(ImportError, r"pip install torch==2\.13\.0"):
        torch_layout.read_state_dict(path)

  def test_convert_file_then_load_directory(self):
    sd = random_state_dict(18, num_classes=1000)
    src = self._write(sd)
    out = os.path.join(self.dir, "converted")
    meta = pretrained.convert_file(src, out, "resnet18")
    self.assertEqual(meta["architecture"]["width"], 8)
    with open(os.path.join(out, pretrained.METADATA_FILE)) as f:
      self.assertEqual(json.load(f)["model"], "resnet18")
    _, fresh = _init("resnet18", num_classes=5)
    from_dir = pretrained.load_into(out, fresh)
    from_file = pretrained.load_into(src, fresh)
    jax.tree.map(np.testing.assert_array_equal, from_dir, from_file)
    with self.assertRaisesRegex(ValueError, "are resnet18.*expects resnet34"):
      pretrained.convert_file(src, os.path.join(self.dir, "bad"), "resnet34")


# ---------------------------------------------------------------------------
# Against real PyTorch (a torchvision-layout ResNet written here; no
# torchvision needed).

if torch is not None:
  nn = torch.nn

  class TorchBasic(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return self.relu(y + (self.downsample(x) if self.downsample else x))

  class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(planes * 4)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return self.relu(y + (self.downsample(x) if self.downsample else x))

  class TorchResNet(nn.Module):
    """torchvision.models.resnet.ResNet, trimmed to the default options."""

    def __init__(self, block, layers, width, num_classes):
      super().__init__()
      self.inplanes = width
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.relu = nn.ReLU()
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      for i, blocks in enumerate(layers):
        setattr(self, f"layer{i + 1}", self._make_layer(
            block, width * 2**i, blocks, 1 if i == 0 else 2))
      self.avgpool = nn.AdaptiveAvgPool2d(1)
      self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                      bias=False),
            nn.BatchNorm2d(planes * block.expansion))
      layers = [block(self.inplanes, planes, stride, downsample)]
      self.inplanes = planes * block.expansion
      layers += [block(self.inplanes, planes, 1, None)
                 for _ in range(1, blocks)]
      return nn.Sequential(*layers)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      for i in range(1, 5):
        x = getattr(self, f"layer{i}")(x)
      return self.fc(torch.flatten(self.avgpool(x), 1))


@absltest.skipIf(torch is None, "PyTorch is not installed (optional: "
                 "pip install torch==2.13.0); the numpy reference tests above "
                 "cover the same conversion.")
class AgainstPyTorchTest(parameterized.TestCase):

  @parameterized.parameters(18, 50)
  def test_logits_match_pytorch(self, depth):
    stages, bottleneck = TORCHVISION[depth]
    torch.manual_seed(depth)
    net = TorchResNet(TorchBottleneck if bottleneck else TorchBasic, stages,
                      width=8, num_classes=10)
    with torch.no_grad():
      for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.weight.uniform_(0.3, 1.0)
          m.bias.normal_(0, 0.2)
          m.running_mean.normal_(0, 0.3)
          m.running_var.uniform_(0.5, 2.0)
    net.eval()
    images = _images()
    x = torch.from_numpy(((images - MEAN) / STD).astype(np.float32))
    with torch.no_grad():
      want = net(x.permute(0, 3, 1, 2)).numpy()
    folder = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "w.pth")
    torch.save(net.state_dict(), path)
    model, fresh = _init(f"resnet{depth}")
    got = _logits(model, pretrained.load_into(path, fresh), images)
    np.testing.assert_array_less(np.abs(got - want).max(), 1e-4)


if __name__ == "__main__":
  absltest.main()
