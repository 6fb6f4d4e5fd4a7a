"""Batching of queued generations: which jobs may share a run (`keys`: whole-batch and step-level keys) and how
the service runs them (`runs`: merged pipeline calls and continuous step-level runs)."""

from pictale.service.batching.keys import SHARED_NOISE_SAMPLERS, batch_key, stream_key

__all__ = ["SHARED_NOISE_SAMPLERS", "batch_key", "stream_key"]
