"""Monitoring: the worker's /metrics endpoint, and the Prometheus that `eventpipe up` runs beside the stack."""
