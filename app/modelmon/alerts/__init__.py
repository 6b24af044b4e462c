"""Alerts: rules, detectors and drift tests, the alert engine, and following and delivering alerts."""
