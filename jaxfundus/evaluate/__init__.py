"""Metrics, thresholds, report and prediction."""
