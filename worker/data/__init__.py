"""Data: datasets and input files downloaded for a task."""
