"""MQTT as eventpipe's clients speak it: URLs, paho clients, limits, session ids, the receive path, the wire format."""
