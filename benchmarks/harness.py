"""What the benchmarks share: the machine, a worker process, the statistic.

* `cpu_name`, `machine`: what a results file records about the host.
* `Worker` / `serve`: a benchmark against another framework runs that
  framework in a worker process of its own venv (torch is never a
  dependency of the library, and the torch venv has no JAX). The script is
  its own worker: the driver starts it with the other venv's python, the
  worker prints one JSON line about itself, then answers one timed run per
  JSON request line, so the driver can alternate ours and theirs round by
  round and both see the same machine load.
* `median_interval`, `format_ratio`, `interval_line`: the median of
  per-round speed ratios with a distribution-free interval.

Standard library only: the torch and imagecorruptions venvs import it too.
A script in benchmarks/ imports it as `import harness` (its own folder is
on `sys.path`).
"""

import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Variables that set up JAX or an allocator: a worker starts without them
# and sets up its own process as the variant it times asks.
_SETUP_VARIABLES = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR",
                    "JAX_NUM_CPU_DEVICES", "GLIBC_TUNABLES", "LD_PRELOAD")


def cpu_name() -> str:
  """The CPU's model name (Linux: /proc/cpuinfo), else what platform says."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine(**extra) -> dict:
  """The host as results files record it: CPU name, cores, Python, extras."""
  return dict(cpu=cpu_name(), cores=os.cpu_count(),
              python=platform.python_version(), **extra)


def cpu_seconds() -> float:
  """User + system CPU time of this process, all threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def load() -> float:
  """The 1-minute load average."""
  return round(os.getloadavg()[0], 2)


def wait_for_idle(max_load: float, timeout_s: float) -> bool:
  """Waits until the 1-minute load average is below `max_load`.

  Returns whether it is; after `timeout_s` prints a warning instead (other
  processes compete for the cores: only interleaved ratios mean anything).
  """
  deadline = time.time() + timeout_s
  while load() > max_load and time.time() < deadline:
    time.sleep(10)
  if load() > max_load:
    print(f"WARNING: load average {load()} > {max_load}: other processes "
          "compete for the cores; only the interleaved ratios are "
          "meaningful. Re-run when idle.", flush=True)
    return False
  return True


def clean_env(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """`environ` (default: this process's) without JAX or allocator set-up,
  on JAX's CPU backend, for a worker that sets itself up."""
  env = dict(os.environ if environ is None else environ)
  for k in _SETUP_VARIABLES:
    env.pop(k, None)
  for k in [k for k in env if k.startswith("MIMALLOC_")]:
    env.pop(k)
  env["JAX_PLATFORMS"] = "cpu"
  return env


def public_command(argv: Sequence[str]) -> str:
  """`argv` as a command line with no machine-local interpreter paths.

  The value of every `--*_python` flag (another venv's python) becomes
  `$<FLAG>`, e.g. `--torch_python=$TORCH_PYTHON`.
  """
  out, args = [], list(argv)
  for i, arg in enumerate(args):
    m = re.fullmatch(r"--(\w+_python)(=.*)?", arg)
    if m and m.group(2):
      arg = f"--{m.group(1)}=${m.group(1).upper()}"
    elif i and re.fullmatch(r"--\w+_python", args[i - 1]):
      arg = f"${args[i - 1][2:].upper()}"
    out.append(arg)
  return " ".join(out)


# ----------------------------------------------------------------------------
# The worker protocol.


def serve(run: Callable[..., object], info: dict,
          warm_up: bool = False) -> None:
  """The worker's loop: `info`, then one timed `run(**request)` per request.

  Prints `info` as one JSON line, then for each JSON line on stdin calls
  `run(**request)` and answers one JSON line: its wall `seconds`,
  `cpu_seconds` (the process's, all threads) and the process's peak
  resident memory so far, `max_rss_mb`. With `warm_up`, the first request
  of each kind is run once untimed before it is timed.

  Args:
    run: performs the timed work of one request, e.g. `run(what, reps)`.
    info: what the worker reports about itself (versions, threads...).
    warm_up: run each distinct request once untimed first.
  """
  print(json.dumps(info), flush=True)
  warm = set()
  for line in sys.stdin:
    request = json.loads(line)
    key = json.dumps(request, sort_keys=True)
    if warm_up and key not in warm:
      run(**request)
      warm.add(key)
    cpu, start = cpu_seconds(), time.perf_counter()
    run(**request)
    print(json.dumps(dict(
        seconds=time.perf_counter() - start, cpu_seconds=cpu_seconds() - cpu,
        # Linux reports ru_maxrss in KiB.
        max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )), flush=True)


class Worker:
  """The driver's side of `serve`: a worker process answering requests."""

  def __init__(self, cmd: Sequence[str], env: Optional[Dict[str, str]] = None,
               cwd: Optional[str] = REPO):
    """Starts `cmd` and reads the worker's `info` line.

    Args:
      cmd: the worker's command line (a python and a script calling
        `serve`).
      env: its environment (default: this process's).
      cwd: its working folder (default: the repository).

    Raises:
      RuntimeError: the worker exited before reporting.
    """
    self._proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env,
                                  cwd=cwd)
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f"worker {' '.join(cmd)} died during set-up")
    self.info = json.loads(line)

  def request(self, **request) -> dict:
    """One timed run: `serve`'s answer to `request`."""
    self._proc.stdin.write(json.dumps(request) + "\n")
    self._proc.stdin.flush()
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f"worker died answering {request}")
    return json.loads(line)

  def close(self) -> None:
    self._proc.stdin.close()
    self._proc.wait()


# ----------------------------------------------------------------------------
# The statistic.


def median_interval(values: Sequence[float], level: float = 0.95
                    ) -> Tuple[float, float, float]:
  """Distribution-free interval of the median: (lo, hi, coverage).

  The order statistics x_(k) <= median <= x_(n+1-k) for the largest k with
  P(Binomial(n, 1/2) < k) <= (1 - level) / 2; coverage is the interval's
  exact probability (>= level when n allows, the whole range otherwise).
  """
  x = sorted(values)
  n = len(x)
  cdf, k = 0.0, 0  # cdf = P(B <= k - 1).
  while True:
    p_k = math.comb(n, k) / 2.0**n
    if cdf + p_k > (1.0 - level) / 2.0 or k + 1 > n - k:
      break
    cdf += p_k
    k += 1
  k = max(k, 1)
  coverage = 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n
  return x[k - 1], x[n - k], coverage


def format_ratio(ratios: Sequence[float]) -> str:
  """'1.09x (97.3 % interval 1.06-1.15, 21 rounds)' for per-round ratios."""
  lo, hi, coverage = median_interval(ratios)
  return (f"{statistics.median(ratios):.2f}x ({100 * coverage:.1f} % "
          f"interval {lo:.2f}-{hi:.2f}, {len(ratios)} rounds)")


def interval_line(label: str, ratios: Sequence[float]) -> str:
  """A markdown bullet: `label`'s per-round ratios, their median, interval."""
  lo, hi, coverage = median_interval(ratios)
  return (f"- {label} per round, {len(ratios)} rounds: median "
          f"{statistics.median(ratios):.2f}, {coverage:.1%} interval of the "
          f"median {lo:.2f}-{hi:.2f} (order statistics); rounds "
          f"{min(ratios):.2f}-{max(ratios):.2f}")
