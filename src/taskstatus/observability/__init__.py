"""Metrics and traces of every task of every queue, from the lifecycle hooks.

Each plugin lives in a module of its own, behind an extra of its own:
:mod:`taskstatus.observability.prometheus` (``pip install 'taskstatus[prometheus]'``) and
:mod:`taskstatus.observability.otel` (``pip install 'taskstatus[otel]'``). This package
imports neither. See docs/observability.md.
"""
