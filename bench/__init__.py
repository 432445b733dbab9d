"""Benchmarks: each module has ``async def main()`` that prints its report and may return its headline figures (``bench._figures.Figure``) for the summary block."""
