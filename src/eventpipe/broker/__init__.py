"""The MQTT broker: addresses, and the local Mosquitto that `eventpipe up` runs."""
