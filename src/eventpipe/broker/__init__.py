"""The local Mosquitto of `eventpipe up`: its config and process, and its log read as a metric."""
