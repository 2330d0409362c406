"""What the tests and the benchmarks share, in one place: tiny real models, datasets with planted features, the
loopback Hub and OpenAI-compatible servers, a brute-force reference harvest, small helpers. Not shipped: neither
pyproject.toml's packages nor the Space hold it. Test fixtures built on these live in tests/conftest.py."""
