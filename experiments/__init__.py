"""Drivers of the compression lab: the train/eval loop, data, models, benchmarks, the paper builder."""


def ensure_lab_package() -> None:
    """Fails loudly if `import compression` found a package other than the lab's.

    Python 3.14 added a standard-library package named `compression`
    (compression.zstd, ...); a checkout that is neither installed
    (`pip install -e .`) nor the working directory would import that one.
    """
    import compression

    if getattr(compression, "LAB_PACKAGE", None) != "compression-lab":
        raise ImportError(
            f"`import compression` found {getattr(compression, '__file__', compression)!r}, which is not "
            f"the compression lab (Python 3.14's standard library has a package of the same name). "
            f"Install the lab with `pip install -e .` (or `make setup`) and run from the repository root.")


ensure_lab_package()
