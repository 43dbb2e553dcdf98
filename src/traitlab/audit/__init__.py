"""Audit a dataset (or a trained model) for hidden traits before anyone trains on it."""

from traitlab.audit.config import AuditConfig, CanaryConfig, ProbeSpec, ScreenConfig
from traitlab.audit.run import audit_dataset, audit_model

__all__ = [
    "AuditConfig",
    "CanaryConfig",
    "ProbeSpec",
    "ScreenConfig",
    "audit_dataset",
    "audit_model",
]
