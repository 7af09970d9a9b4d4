"""Loads the plugin that runs the code blocks of README.md and docs/*.md as tests."""

pytest_plugins = ["tests.docs_harness"]
