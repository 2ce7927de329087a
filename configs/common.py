"""The one parser of a config's argument, `--config=configs/NAME.py:ARG` (after big_vision's configs/common.py).

Each experiment config starts with

    def get_config(arg: str = "gradual_90"):
        arg = common.parse_arg(arg, __file__, kind=("gradual", KINDS), sparsity=(90, SPARSITIES), quick=False)

and reads `arg.kind`, `arg.sparsity`, `arg.quick`. See `parse_arg` for the forms ARG takes.
"""
from __future__ import annotations

import os
import re

import ml_collections


def config_path(config: str) -> str:
    """configs/NAME.py for a config's __file__ (or its bare NAME)."""
    name = os.path.basename(config)
    return f"configs/{name if name.endswith('.py') else name + '.py'}"


def arg_error(config: str, arg: str, why: str, accepted: str = "") -> ValueError:
    """The ValueError for a bad argument: names the config, the argument, what is wrong and the accepted forms."""
    message = f"{config_path(config)}: bad variant {arg!r} ({why})"
    return ValueError(message + (f"; accepted: {accepted}" if accepted else ""))


def _spec(spec: dict) -> dict:
    """name -> (default, choices or None); a (default, choices) tuple names one part of the variant."""
    out = {}
    for name, value in spec.items():
        if isinstance(value, tuple):
            default, choices = value
            if default not in choices:
                raise TypeError(f"parse_arg: the default {default!r} of {name!r} is not among its choices {choices}")
            out[name] = (default, tuple(choices))
        else:
            out[name] = (value, None)
    return out


def _show(value) -> str:
    return repr(value) if value == "" else str(value)


def _accepted(spec: dict) -> str:
    """The accepted forms of ARG under `spec`, for error messages."""
    fields = [n for n, (_, choices) in spec.items() if choices is not None]
    flags = [n for n, (default, _) in spec.items() if isinstance(default, bool)]
    if fields:
        default = "_".join(str(spec[n][0]) for n in fields if str(spec[n][0]))
        form = "_".join(n.upper() for n in fields) + "".join(f"[_{f}]" for f in flags) + " with "
        form += " and ".join(f"{n.upper()} one of {', '.join(map(_show, spec[n][1]))}" for n in fields)
        form += f" (default {_show(default)}"
        flag = "quick" if "quick" in flags else (flags or [None])[0]
        if flag:
            form += f", so {flag} alone is {default}_{flag}" if default else f", which {flag} alone keeps"
        form += ")"
    else:
        form = " or ".join(["nothing (the default)", *flags])
    return form + f"; also as comma-separated key=value items over {', '.join(spec)} (a flag alone is flag=true)"


def _convert(raw: str, default, choices, name: str) -> object:
    """`raw` as the type of `default`, checked against `choices`; raises ValueError with the reason."""
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"{name} takes true or false, not {raw!r}")
        return raw.lower() == "true"
    if isinstance(default, int):
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise ValueError(f"{name} takes a whole number, not {raw!r}")
        value = int(raw)
    else:
        value = type(default)(raw)
    if choices is not None and value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(_show, choices))}")
    return value


def parse_arg(arg: str, config: str, /, **spec) -> ml_collections.ConfigDict:
    """Parses ARG of `--config=configs/NAME.py:ARG` into the named, typed fields of `spec`.

    `config` is the calling config's __file__ (for messages). `spec` gives the
    fields in order, each as
      name=(default, choices)  one part of the variant's name, one of `choices`;
      name=False               a flag (bool): `quick`, `ft`;
      name=default             any other setting, of default's type, given only as key=value.
    ARG is comma-separated items, each either `key=value` (a flag takes
    true/false) or a word: the variant's parts joined by '_' in spec order
    (the last part may itself contain '_'), followed by any flags, each as
    `_flag`; a word of flags alone keeps the default variant. So with
    kind=("gradual", KINDS), sparsity=(90, LEVELS), quick=False:
      "oneshot_75" -> kind oneshot, sparsity 75, quick False;
      "gradual_90_quick", "quick", "quick,sparsity=90", "sparsity=90,quick=true" -> gradual, 90, True.
    An empty ARG is the defaults only where the default variant has no name
    (configs without variant parts, or whose default part is ''); elsewhere a
    run names its variant, or a flag such as `quick`, so that
    experiments.reproduce's runs/NAME_ARG folder says which variant ran.
    Raises ValueError naming the config, ARG and the accepted forms.
    """
    spec = _spec(spec)
    fields = [n for n, (_, choices) in spec.items() if choices is not None]
    flags = {n for n, (default, _) in spec.items() if isinstance(default, bool)}
    given: dict = {}

    def fail(why):
        return arg_error(config, arg, why, _accepted(spec))

    def put(name, raw):
        if name not in spec:
            raise fail(f"{name!r} is not a setting of this config")
        if name in given:
            raise fail(f"{name} given twice")
        try:
            given[name] = _convert(raw, *spec[name], name)
        except ValueError as e:
            raise fail(str(e)) from None

    if not arg and any(str(spec[n][0]) for n in fields):
        raise fail("name the variant, or give `quick` for the default one at CPU scale")
    for item in arg.split(",") if arg else []:
        key, eq, raw = item.partition("=")
        if eq:
            put(key, raw)
            continue
        parts = item.split("_")
        while parts and parts[-1] in flags:
            put(parts.pop(), "true")
        if not parts:
            continue
        name = "_".join(parts)
        if not fields:
            raise fail(f"{name!r} is not a variant of this config")
        values = name.split("_", len(fields) - 1)
        if len(values) != len(fields) or "" in values:
            raise fail(f"{name!r} does not name the variant's parts " + "_".join(f.upper() for f in fields))
        for part, raw in zip(fields, values):
            put(part, raw)
    return ml_collections.ConfigDict({name: given.get(name, default) for name, (default, _) in spec.items()})
