"""The `eventpipe` command: up | worker | api | migrate | publish."""
