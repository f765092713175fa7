"""FakeVllm: the stand-in for vLLM's engine in Docker tests (``server.py``, run inside the image
that ``image.py`` builds)."""
