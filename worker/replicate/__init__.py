"""Replicates: the scheduler's status vocabulary, the worker's transition table and pipelines."""
