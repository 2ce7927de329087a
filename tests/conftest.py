"""Test-session setup: 8 host devices, so sharding is exercised on a CPU.

XLA reads XLA_FLAGS once, when jax is first imported, so it is set here,
before any test module imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
# The suite's time is mostly XLA compiling small programs once each, and most of a compile is LLVM
# optimizing the CPU code: a model's init (threefry hashing per parameter) takes ~5 s at the default
# level and ~1 s at 0. The tests check what programs compute, which the backend's optimization level
# does not change (XLA's graph passes still run; no fast-math), only how fast the compiled code runs;
# on the 15 slowest tests it cut 412 s to 317 s. Timings belong to the benchmarks, run outside pytest.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Many tests compile the same small computations (a tiny model's forward pass, its export's reload
# check) in different processes and runs; JAX's persistent compilation cache, shared by the xdist
# workers of one session, compiles each of them once (a cold run of `make test` took 319 s of pytest
# instead of 501 s). It lives in the temporary directory (a few MB per run of changed code); its keys
# include jax's version and flags and the computation itself, so a stale entry is never read.
_CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"compression-lab-jax-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
