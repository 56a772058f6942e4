"""robustjax.timing: compile seconds from jax.monitoring, exclusive stages."""

import time

from absl.testing import absltest
import jax
import jax.numpy as jnp

from robustjax import timing


class TimingTest(absltest.TestCase):

  def test_compile_seconds_grow_with_a_new_program_only(self):
    before = timing.compile_seconds()
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.cos(x))
    f(jnp.ones(7)).block_until_ready()
    after_first = timing.compile_seconds()
    self.assertGreater(after_first, before)
    f(jnp.ones(7)).block_until_ready()  # Cached: no new compile.
    self.assertEqual(timing.compile_seconds(), after_first)

  def test_stages_nest_exclusively_and_add_up(self):
    times = timing.Stages()
    with times.stage("outer"):
      time.sleep(0.05)
      with times.stage("inner"):
        time.sleep(0.1)
        g = jax.jit(lambda x: x @ x.T + 1.0)
        g(jnp.ones((5, 3))).block_until_ready()
      time.sleep(0.05)
    d = times.as_dict()
    self.assertBetween(d["stages"]["inner"]["wall_s"], 0.1, 5.0)
    self.assertBetween(d["stages"]["outer"]["wall_s"], 0.1, 0.5)
    self.assertGreater(d["stages"]["inner"]["compile_s"], 0.0)
    self.assertLess(d["stages"]["outer"]["compile_s"],
                    d["stages"]["inner"]["compile_s"])
    total = sum(v["wall_s"] for v in d["stages"].values())
    self.assertAlmostEqual(d["total"]["wall_s"], total, delta=0.01)
    summary = times.summary()
    self.assertIn("inner", summary)
    self.assertIn("total", summary.splitlines()[-1])


if __name__ == "__main__":
  absltest.main()
