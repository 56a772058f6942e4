"""Data preparation in a multi-host run: process 0 builds, the others wait.

Two processes joined by `jax.distributed` over localhost (gloo CPU
collectives; a stand-in for a 2-host TPU VM) share one fresh data dir, as
hosts share an NFS or gcsfuse folder. Each process counts how often the
digits builder generates examples. On a first run only process 0 may build
(two builders writing one folder race); both must then read the same data.
`prepare.prepare` behaves the same, and when process 0 fails (Office-31
without its download) both processes stop with an error instead of one
waiting forever.

  python -m pytest tests/data/multihost_test.py
"""
# pylint: disable=g-import-not-at-top  (JAX starts in the workers.)

import json
import os
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
WORKER = "--multihost-data-worker"


def _worker(out_dir, data_dir, pid, nproc, port):
  """One process: prepare + load digits, then a failing preparation."""
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", nproc, pid,
                             initialization_timeout=600,
                             heartbeat_timeout_seconds=600)
  from robustjax.data import digits
  from robustjax.data import prepare
  from robustjax.data import registry
  builds = []
  original = digits.Digits._generate_examples  # pylint: disable=protected-access

  def counting(self, load):
    builds.append(self.builder_config.name)
    yield from original(self, load)

  digits.Digits._generate_examples = counting  # pylint: disable=protected-access
  result = {"pid": pid}
  split = registry.load_split("digits", "uci", "test", 12,
                              data_dir=os.path.join(data_dir, "a"))
  result["load_builds"] = list(builds)
  result["labels"] = split.labels.tolist()
  del builds[:]
  result["counts"] = prepare.prepare("digits",
                                     data_dir=os.path.join(data_dir, "b"),
                                     domains=["uci"])
  result["prepare_builds"] = list(builds)
  try:
    prepare.prepare("office31", data_dir=os.path.join(data_dir, "c"),
                    manual_dir=os.path.join(data_dir, "no_such_folder"),
                    domains=["dslr"])
  except Exception as e:  # pylint: disable=broad-except
    result["error"] = f"{type(e).__name__}: {e}"
  with open(os.path.join(out_dir, f"process_{pid}.json"), "w") as f:
    json.dump(result, f)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class MultiHostPrepareTest(absltest.TestCase):

  def test_process_0_prepares_the_others_wait(self):
    tmp = tempfile.mkdtemp(dir=self.create_tempdir().full_path)
    data_dir = os.path.join(tmp, "shared_tfds")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), WORKER, tmp, data_dir,
         str(pid), "2", str(port)], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for pid in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for p, log in zip(procs, logs):
      self.assertEqual(p.returncode, 0, "\n---\n".join(l[-3000:] for l in logs))
    first, second = (json.load(open(os.path.join(tmp, f"process_{i}.json")))
                     for i in range(2))
    self.assertEqual(first["load_builds"], ["uci"])  # Built once...
    self.assertEqual(second["load_builds"], [])  # ...by process 0 only.
    self.assertLen(first["labels"], 1797)
    self.assertEqual(first["labels"], second["labels"])
    self.assertEqual(first["prepare_builds"], ["uci"])
    self.assertEqual(second["prepare_builds"], [])
    self.assertEqual(first["counts"], {"uci": {"test": 1797}})
    self.assertEqual(second["counts"], first["counts"])
    # Process 0's own error; the other one is told to look there.
    self.assertIn("FileNotFoundError: Office-31 domain 'dslr' not found",
                  first["error"])
    self.assertIn("RuntimeError: Process 0 failed while preparing office31",
                  second["error"])


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == WORKER:
    sys.path.insert(0, REPO)
    a = sys.argv[2:]
    _worker(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
  else:
    absltest.main()
