"""The MQTT broker: addresses, clients, packet limits."""
