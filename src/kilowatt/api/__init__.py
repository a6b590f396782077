"""The operator REST API."""
