"""Side-by-side benchmarks of livebridge (``python -m benchmarks.run``); see RESULTS.md.

Not tests: pytest collects only ``tests/``.
"""
