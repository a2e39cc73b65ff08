"""The MQTT broker: addresses, clients, packet limits, and the local Mosquitto of `eventpipe up`."""
