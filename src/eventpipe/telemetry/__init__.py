"""Telemetry every command shares: the /metrics endpoint, and what clients cause at will logged as counts."""
