"""Typed configuration, generic over the config dataclass: defaults < YAML file < command-line flags.

One flat namespace (as in nanoGPT) described once, as dataclass fields; the argparse
parser and the YAML reader are generated from it, so a flag and a YAML key can never
disagree. Every input error — unknown flag or key, wrong type, bad value — becomes a
:class:`ConfigError` with one sentence naming the input and the fix; entry points print
it and exit with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from odenet.errors import ConfigError
from odenet.registry import closest

__all__ = ["ConfigError", "Parser", "build_parser", "coerce", "flag", "load_yaml", "opt", "parse", "plain",
           "read_yaml"]


def opt(default: Any, help: str, **extra) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field carrying its command-line help."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


# --------------------------------------------------------------------------- type coercion

def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, whether None is allowed) of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or raise ConfigError."""
    base, nullable = _base_type(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and nullable):
        if nullable:
            return None
        raise ConfigError(f"{name} cannot be empty; give a {_type_name(base)}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif base is float:
            # PyYAML reads 1e-3 (no dot) as a string, so numeric strings are accepted.
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return float(value)
        elif base is str:
            if isinstance(value, str):
                return value
        elif typing.get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (list, tuple)):
                return [coerce(name, typing.get_args(base)[0], v) for v in items]
    except ValueError:
        pass
    raise ConfigError(f"{name} expects {_type_name(base)}, got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        item = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {item.get(typing.get_args(tp)[0], 'values')} (e.g. 60,100,140)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- parser

def plain(text: str) -> str:
    """Docstring markup as plain terminal text: ``x`` and :func:`x` become x."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


class Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one sentence, with a did-you-mean) instead of exiting,
    and whose --help is plain text (descriptions taken from docstrings lose their markup)."""

    def format_help(self) -> str:
        return plain(super().format_help())

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            first = next((u for u in unknown if u.startswith("-")), unknown[0])
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            hint = closest(first.split("=")[0], known) if first.startswith("--") else ""
            raise ConfigError(f"unknown flag {first}{hint}; run with --help for the list")
        if message.startswith("argument ") and ": " in message:  # "argument --tol: expects a number, ..."
            name, rest = message.removeprefix("argument ").split(": ", 1)
            message = f"{name.split('/')[0]} {rest}"
        elif message.startswith("the following arguments are required"):
            message += "; run with --help for the usage"
        raise ConfigError(message)


_Parser = Parser


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field; absent flags stay absent."""
    parser = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        kw: dict[str, Any] = {"help": f.metadata.get("help", "")}
        if "choices_help" in f.metadata:
            kw["help"] += f" ({f.metadata['choices_help']()})"
        kw["help"] += _default_help(f, kw["help"])
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = f.metadata.get("metavar", f.name.upper())
            kw["type"] = _cli_converter(f.name, hints[f.name])
        parser.add_argument(flag(f.name), dest=f.name, **kw)
    return parser


def _default_help(f: dataclasses.Field, text: str) -> str:
    """' (default: X)' for --help, unless there is no default or the help already says what it is."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if default is None or default is dataclasses.MISSING or re.search(r"\bdefault\b", text):
        return ""
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, list):
        shown = ",".join(map(str, default))
    else:
        shown = str(default)
    return f" (default: {shown})"


def _cli_converter(name: str, tp: Any):
    def convert(text: str) -> Any:
        try:
            return coerce(flag(name), tp, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(flag(name) + " ")) from None

    convert.__name__ = _type_name(_base_type(tp)[0])
    return convert


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document at ``path``; every way of failing is one ConfigError sentence."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; check the path given to --config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not text (not UTF-8); pass a YAML file to --config") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc}); pass a readable YAML file "
                          f"to --config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") \
            from None
    except RecursionError:
        raise ConfigError(f"{what} {path} nests its values deeper than any odenet setting; pass a flat mapping of "
                          f"option: value") from None


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Read a YAML config and check its keys and types against ``cls``."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option: value, not a {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("cli_only")]
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(f"unknown key {key!r} in {path}{closest(name, names)}; valid keys are the long "
                              f"flags without '--' (see --help)")
        values[name] = coerce(f"{name} (in {path})", hints[name], value)
    return values


def parse(cls: type, argv: list[str] | None, prog: str, description: str) -> tuple[Any, set[str]]:
    """defaults < YAML (``--config``) < flags → (config, names set explicitly by YAML or flags)."""
    parser = build_parser(cls, prog, description)
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    values = load_yaml(args["config"], cls) if args.get("config") else {}
    values.update(args)
    return cls(**values), set(values)
