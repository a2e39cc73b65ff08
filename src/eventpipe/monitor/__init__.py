"""Monitoring of the native stack: the Prometheus that `eventpipe up` runs beside it."""
