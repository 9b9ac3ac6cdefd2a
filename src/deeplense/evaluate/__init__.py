"""Metrics, figures, reports and run comparison."""
