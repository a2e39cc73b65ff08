"""Helpers the test suites share: free ports, waiting, and real services."""
