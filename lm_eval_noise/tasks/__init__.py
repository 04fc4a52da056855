"""Glue that the task YAMLs in tasks/ call through `!function`."""
