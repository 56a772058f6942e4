"""Tests for robustjax.train.steps' cache (the programs: trainer_test.py)."""

from unittest import mock

from absl.testing import absltest

from robustjax.train import steps


class SharedCacheTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    steps.clear_cache()
    self.addCleanup(steps.clear_cache)

  def test_equal_keys_share_one_object(self):
    first = steps.shared(("a", 1), object)
    self.assertIs(steps.shared(("a", 1), object), first)
    self.assertIsNot(steps.shared(("a", 2), object), first)

  def test_unhashable_keys_build_afresh(self):
    self.assertIsNot(steps.shared(("a", [1]), object),
                     steps.shared(("a", [1]), object))

  def test_least_recently_used_is_dropped_first(self):
    with mock.patch.object(steps, "_MAX_ENTRIES", 2):
      a = steps.shared("a", object)
      b = steps.shared("b", object)
      self.assertIs(steps.shared("a", object), a)  # Now the newest.
      steps.shared("c", object)  # Drops "b".
      self.assertIs(steps.shared("a", object), a)
      self.assertIsNot(steps.shared("b", object), b)
      self.assertLen(steps._CACHE, 2)

  def test_factories_return_one_object_per_argument_set(self):

    @steps.same_object_for_same_args
    def make(x, y=0):
      return object()

    self.assertIs(make(1, y=2), make(1, y=2))
    self.assertIsNot(make(1, y=2), make(1, y=3))
    self.assertIsNot(make([1]), make([1]))  # Unhashable: fresh objects.

  def test_program_key_marks_the_wrapper(self):
    wrap = steps.set_program_key(lambda tx: tx, ("k",))
    self.assertEqual(wrap.program_key, ("k",))


if __name__ == "__main__":
  absltest.main()
