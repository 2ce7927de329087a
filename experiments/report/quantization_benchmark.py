"""The report's Quantization section, third part: the quantization benchmark.

A family module of experiments/report (see builder.py): the QAT step time
against float and the exported bytes against the size formula, from
experiments/benchmark_quantization.py's --out JSON at
RESULTS/benchmark_quantization/benchmark.json. Whether a quantized step is
slower, faster or no different from float is common.compare_repeats (a
difference inside the repetitions' range is no difference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from experiments.report.common import (MISSING, Group, References, ReportInputs, ResultsError,
                                       get_path, is_number, markdown_table, ratio_cell, read_json)

SECTION = "Quantization"

BENCHMARK_DIR = "benchmark_quantization"
BENCHMARK_FILE = "benchmark.json"
BENCHMARK_PARTS = ("step_time", "bytes")
BENCHMARK_VARIANTS = ("float", "qat", "qat+act")
# experiments/benchmark_quantization.py's MIN_TIMED_STEPS: fewer timed steps per
# repetition leave the ratio's spread over repetitions too wide to read (> ±5 %).
MIN_TIMED_STEPS = 40


def _benchmark_command(path_text: str) -> str:
    return f"python -m experiments.benchmark_quantization --out={path_text}"


def load_benchmark(path: Path) -> dict[str, Any] | None:
    """experiments/benchmark_quantization.py's --out JSON, None when the file does not exist.

    It must be an object holding a `step_time` or `bytes` list (or both) of
    objects; anything else raises `ResultsError` naming the path.
    """
    if not path.is_file():
        return None
    data = read_json(path)
    parts = [data.get(p) for p in BENCHMARK_PARTS] if isinstance(data, dict) else []
    present = [rows for rows in parts if rows is not None]
    if not present or not all(isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                              for rows in present):
        raise ResultsError(f"{path}: expected an object with a 'step_time' and/or 'bytes' "
                           "list of objects (experiments/benchmark_quantization.py --out)")
    return data


def _number(value: Any, fmt: str) -> str:
    return fmt.format(value) if is_number(value) else MISSING


def _load_text(row: Mapping[str, Any]) -> str:
    before, after = (get_path(row, f"load_average.{k}") for k in ("before", "after"))
    if isinstance(before, list) and isinstance(after, list) and before and after:
        return f"{before[0]:.1f} → {after[0]:.1f}"
    return MISSING


def _step_time_table(rows: Sequence[Mapping[str, Any]]) -> str:
    table = [[str(r.get("model", MISSING)), str(r.get("dataset", MISSING)),
              _number(r.get("batch_size"), "{:,.0f}"), _number(r.get("steps"), "{:,.0f}"),
              *(_number(get_path(r, f"ms_median.{v}"), "{:.3f}") for v in BENCHMARK_VARIANTS),
              *(ratio_cell(r, v, "float") for v in BENCHMARK_VARIANTS[1:]),
              str(r.get("device", MISSING)), _load_text(r)] for r in rows]
    headers = ["model", "data", "batch", "timed steps",
               *(f"{v} ms/step" for v in BENCHMARK_VARIANTS),
               *(f"{v} / float (range over repetitions; verdict)" for v in BENCHMARK_VARIANTS[1:]),
               "device", "load before → after"]
    return markdown_table(headers, table)


def _bytes_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def weights(r: Mapping[str, Any]) -> str:
        if r.get("bits") == 32 or r.get("scheme") == "float32":
            return "float32"
        return f"{r.get('bits', MISSING)} bit ({r.get('scheme', MISSING)})"

    def per_param(r: Mapping[str, Any]) -> str:
        b, n = r.get("bytes_file"), r.get("params")
        return f"{8 * b / n:.3f}" if is_number(b) and is_number(n) and n else MISSING

    table = [[str(r.get("model", MISSING)), weights(r), _number(r.get("params"), "{:,.0f}"),
              _number(r.get("bytes_file"), "{:,.0f}"), _number(r.get("bytes_formula"), "{:,.0f}"),
              _number(r.get("bytes_payload"), "{:,.0f}"), _number(r.get("bytes_header"), "{:,.0f}"),
              _number(None if not is_number(v := r.get("file_vs_formula")) else 100 * v,
                      "{:+.2f} %"),
              per_param(r), ", ".join(map(str, r.get("index") or [])) or MISSING] for r in rows]
    headers = ["model", "weights", "params", "file bytes", "formula bytes", "payload bytes",
               "header bytes", "file vs formula", "bits/param (file)", "index layout"]
    return markdown_table(headers, table)


def _stage_bits(rows: Sequence[Mapping[str, Any]], variant: str) -> str:
    """The bit widths of one benchmark variant's compression stages, as the rows record them."""
    bits = sorted({stage["bits"] for r in rows
                   for stage in (get_path(r, "stages") or {}).get(variant, [])
                   if isinstance(stage, Mapping) and is_number(stage.get("bits"))})
    return "/".join(f"{b:g}" for b in bits) if bits else MISSING


def _benchmark_part(inputs: ReportInputs, groups: Mapping[str, Group],
                    refs: References) -> str:
    del groups, refs
    path = (inputs.results_dir / BENCHMARK_DIR / BENCHMARK_FILE
            if inputs.results_dir is not None else None)
    path_text = path.as_posix() if path is not None else f"{BENCHMARK_DIR}/{BENCHMARK_FILE}"
    data = load_benchmark(path) if path is not None else None
    if data is None:
        return f"Not run yet: `{BENCHMARK_DIR}` (`{_benchmark_command(path_text)}`)."
    meta = ", ".join(f"{k} {data[k]}" for k in ("device", "cpu_count", "jax")
                     if data.get(k) not in (None, ""))
    command = data.get("command")
    source = (f"`{command}`" if isinstance(command, str) and command.strip() else
              f"`{_benchmark_command(path_text)}` (the file does not record the flags it ran "
              "with)")
    parts = [f"From `{path_text}`" + (f" ({meta})" if meta else "") + f", written by {source}."]
    step_rows = data.get("step_time")
    if step_rows:
        bits = {v: _stage_bits(step_rows, v) for v in BENCHMARK_VARIANTS[1:]}
        parts.append(
            f"Step time: the driver's whole train loop per step, float against QAT with "
            f"{bits['qat']}-bit weights (`qat`) and with {bits['qat+act']}-bit weights and "
            "layer inputs (`qat+act`), the same model, data and steps, repetitions "
            "interleaved; ms/step are medians over the repetitions and a ratio above 1 means "
            "the quantized step is slower. The verdict says slower or faster only where the "
            "two variants' repetitions do not overlap (every repetition of one slower than "
            "every repetition of the other); a difference inside the repetitions' range is no "
            "difference.")
        parts.append(_step_time_table(step_rows))
        few = [f"{r.get('model', MISSING)} ({r['steps']} timed steps)" for r in step_rows
               if is_number(r.get("steps")) and r["steps"] < MIN_TIMED_STEPS]
        if few:
            parts.append(
                "Too few timed steps per repetition to read a ratio: " + ", ".join(few)
                + f"; the benchmark now times at least {MIN_TIMED_STEPS} steps per repetition "
                "by default, aiming at a ratio whose range over the repetitions stays within "
                "±5 %; rerun it to replace these rows.")
    else:
        parts.append("Not run yet: the step-time part (`--parts=step_time`).")
    byte_rows = data.get("bytes")
    if byte_rows:
        parts.append(
            "Bytes: the quantized export of randomly initialized weights (bytes do not depend "
            "on training) on disk, beside the formula (packed codes + 4 bytes per scale, zero "
            "point and codebook entry + 4 bytes per float parameter) and the tensors' payload; "
            "the header is the safetensors container's.")
        parts.append(_bytes_table(byte_rows))
    else:
        parts.append("Not run yet: the bytes part (`--parts=bytes`).")
    return "\n\n".join(parts)


PARTS = (
    ("Cost of quantization-aware training and size of the export", _benchmark_part),
)
