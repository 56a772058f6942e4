"""TEMPORARY stand-in until the evaluator registry lands (helper branch)."""
from robustjax.train import eval_lib


def accuracy(apply_fn, variables, split, batch_size):
  return eval_lib.accuracy(apply_fn, variables, split, batch_size)
