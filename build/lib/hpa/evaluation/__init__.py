"""Scoring models: metric names and metrics, decision thresholds, TTA, ensembles, reports."""
