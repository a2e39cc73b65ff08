"""The native stack: what `eventpipe up` runs on this machine without Docker.

Its broker and Prometheus as child processes, the local CA of `--tls`, the
secrets it keeps in its data dir, and the composition that runs them beside
the worker and the API in one process.
"""
