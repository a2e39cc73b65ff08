"""Ingest: MQTT consumer, batching policy, the worker loop that writes and acknowledges."""
