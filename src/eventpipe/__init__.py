"""eventpipe: a self-hosted event pipeline, MQTT -> ClickHouse -> HTTP."""

__version__ = "0.1.0"
