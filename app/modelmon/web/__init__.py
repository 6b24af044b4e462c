"""The worker's web side: HTTP API, Prometheus exposition and the dashboard."""
