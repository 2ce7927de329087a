"""Test-session setup: 8 host devices, so sharding is exercised on a CPU.

XLA reads XLA_FLAGS once, when jax is first imported, so it is set here,
before any test module imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
