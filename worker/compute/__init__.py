"""Compute: pulling app images and running app containers with Docker."""
