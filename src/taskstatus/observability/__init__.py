"""Metrics and traces of every task of every queue, from the lifecycle hooks."""
