"""Producers: demo events and the publisher behind `eventpipe publish`."""
