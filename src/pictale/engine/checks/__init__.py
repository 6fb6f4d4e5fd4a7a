"""Checks made before a job runs, from file headers and configs only (no torch): a 422 instead of a crash."""
