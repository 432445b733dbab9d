"""Benchmarks: each module has ``async def main() -> None`` that prints its figures (medians, ratios)."""
