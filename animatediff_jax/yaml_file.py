"""The YAML files the project reads (prompt, inference, SparseCtrl and training configs), read one way,
and the one it writes (a sampling run's config.yaml).

    data = read_yaml("configs/prompts/v2.yaml", "prompt config")            # any YAML document
    data = read_yaml_mapping("configs/training/training.yaml", "training config")
    dump_yaml(entries, f)                                                   # plain YAML, for people to edit

Whatever keeps a file from being used is an `InputError` of one line that names the file first, then
its role and the problem: not found, a directory, unreadable, not UTF-8, not valid YAML (with the
line and column), holding a mapping key twice (with both lines: YAML would silently keep the last),
empty, or (`read_yaml_mapping`) not a mapping.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Hashable, Mapping

import yaml

from animatediff_jax.errors import InputError
from animatediff_jax.text_files import read_text


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` refusing a mapping that holds one key twice (PyYAML would keep the last one), and
    reading numbers in exponent notation as OmegaConf (which the original AnimateDiff's configs were
    written for) does: PyYAML's YAML 1.1 rules read `1e-3`, `75e-1` and `1.5e3` as strings (they need a
    dot and a signed exponent)."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be repeated and overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by the SafeLoader itself
            if key in first:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r} (first on line {first[key] + 1})",
                                           problem_mark=key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


class _PlainDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` writing a value met twice in full each time, not as an anchor and alias
    (`&id001` / `*id001`), which people editing the file would not expect."""

    def ignore_aliases(self, data):
        return True


def dump_yaml(data: Any, stream) -> None:
    """Write `data` to the text stream `stream` as plain block YAML: keys in their order, Unicode as is,
    no anchors or aliases."""
    yaml.dump(data, stream, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)


_UniqueKeyLoader.add_implicit_resolver(  # added to PyYAML's own float forms, for the first characters given
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(path: str | os.PathLike, role: str) -> Any:
    """The YAML document in file `path`; InputError `<path>: <role> <problem>` when there is none."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {role} is a directory, not a YAML file")
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {role} not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the {role} ({e.strerror or e})") from None
    except ValueError as e:  # not UTF-8 text
        raise InputError(f"{path}: {role} is {e}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: {role} is not valid YAML: {yaml_problem(e)}") from None
    if data is None:
        raise InputError(f"{path}: {role} is empty (no YAML content)")
    return data


def read_yaml_mapping(path: str | os.PathLike, role: str) -> Mapping:
    """The YAML mapping in file `path` (`read_yaml`'s errors, or InputError when it is not a mapping)."""
    data = read_yaml(path, role)
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: {role} must be a YAML mapping (key: value lines), got a {type(data).__name__}")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line, column), the problem, and what it was reading
    (`line 2, column 2: expected ',' or ']', but got ':' (while parsing a flow sequence from line 1, column 4)`)."""
    if isinstance(e, yaml.reader.ReaderError):  # a control character; its position counts characters
        return f"character {e.position + 1}: unacceptable character #x{e.character:04x} ({e.reason})"
    if not isinstance(e, yaml.MarkedYAMLError):
        return " ".join(str(e).split())
    problem, context = e.problem or e.context, e.context if e.problem else None
    mark = e.problem_mark or e.context_mark
    text = f"{_at(mark)}: {problem}" if mark else str(problem)
    if context and e.context_mark and e.context_mark is not mark:
        text += f" ({context} from {_at(e.context_mark)})"
    return text


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"
