"""Shared fixtures: real local servers for targets and for the GitHub API."""

pytest_plugins = ["tests.targets", "tests.fakegithub"]
