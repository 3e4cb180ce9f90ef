"""Plugins that fail on purpose, for the failure-isolation test."""
