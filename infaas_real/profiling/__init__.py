"""Variant generation and profiling.

- :mod:`.artifacts` — build (train/load, export ONNX, quantize int8) and cache artifacts
  keyed by a content hash;
- :mod:`.measure` — load latency, per-batch p50/p99, peak memory, agreement, accuracy;
- :mod:`.hostinfo` — the CPU/GPU model and thread cap of this machine;
- :mod:`.plan` — which variants to generate from a zoo and a profile config;
- :mod:`.table` — rows in the DESIGN.md profile schema and the ``.meta.json`` sidecar;
- :mod:`.modeled` — the documented scaling model for accelerator classes.
"""
