"""Measuring a trait: the exact and sampled methods (see `suite.evaluate_model`)."""

from traitlab.evaluate.suite import evaluate_model

__all__ = ["evaluate_model"]
