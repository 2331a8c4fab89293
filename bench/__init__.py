"""libchat's benchmark harness: ``python -m bench`` (``--smoke`` for CI)."""
