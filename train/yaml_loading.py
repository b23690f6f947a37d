"""Reading the project's YAML files strictly: a key given twice is an error, never a silent overwrite.

PyYAML keeps the last of two equal keys of a mapping, so a recipe with two `optim:` blocks would train with the
second one only. `StrictLoader` (a SafeLoader) refuses that at any nesting level, naming the key path and both
lines; `load_yaml_file` reads one file and turns every problem (missing file, syntax error, duplicate keys) into a
`ConfigError` that names the file and the line, for a one-paragraph message instead of a traceback.

    data = load_yaml_file("recipes/x.yaml", "recipe")     # ConfigError: recipes/x.yaml: 1 problem:
                                                          #   - key 'optim' appears twice (lines 12 and 30)
    yaml.load(text, Loader=StrictLoader)                  # DuplicateKeyError (a yaml.YAMLError)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from train.typed_config import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """One or more mapping keys appear twice in a document; `problems` has one line per key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKeyError for a key given twice in one mapping, at any depth.

    `<<: *anchor` merge keys are not duplicates: overriding merged keys is what they are for.
    """

    def construct_document(self, node: Node) -> Any:
        problems: list[str] = []
        self._check_keys(node, "", set(), problems)
        if problems:
            raise DuplicateKeyError(problems)
        return super().construct_document(node)

    def _check_keys(self, node: Node, path: str, visited: set[int], problems: list[str]) -> None:
        if id(node) in visited:  # an alias seen before (or a recursive structure)
            return
        visited.add(id(node))
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self._check_keys(item, f"{path}[{i}]", visited, problems)
            return
        if not isinstance(node, MappingNode):
            return
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._check_keys(value_node, path, visited, problems)
                continue
            scalar = isinstance(key_node, ScalarNode)
            key = self.construct_object(key_node) if scalar else None  # compared as YAML reads it: yes == true
            text = key_node.value if scalar else "?"  # named as written
            key_path = f"{path}.{text}" if path else text
            line = key_node.start_mark.line + 1
            if scalar and key in first_line:
                lines = f"lines {first_line[key]} and {line}" if first_line[key] != line else f"both on line {line}"
                problems.append(f"key {key_path!r} appears twice ({lines})")
            elif scalar:
                first_line[key] = line
            self._check_keys(value_node, key_path, visited, problems)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line with its position: "not valid YAML at line 3, column 7: ..."."""
    if isinstance(err, DuplicateKeyError):
        return "; ".join(err.problems)
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        text = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
        if err.context:
            where = f" at line {err.context_mark.line + 1}" if err.context_mark is not None else ""
            text += f" ({err.context}{where})"
        return text
    return f"not valid YAML: {' '.join(str(err).split())}"


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> plain data through StrictLoader, or ConfigError naming `source` with every problem."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no arbitrary objects
    except DuplicateKeyError as err:
        raise ConfigError(source, err.problems) from None
    except yaml.YAMLError as err:
        raise ConfigError(source, [yaml_problem(err)]) from None


def load_yaml_file(path: str | Path, what: str = "YAML") -> Any:
    """One YAML file -> plain data; ConfigError naming the file for a missing or unreadable file, a syntax error
    (with its line) or a duplicate key (with both lines). `what` names the file's role: "recipe file not found"."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [f"{what} file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [f"is a folder, not a {what} file"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [f"not a text file (byte {err.start} is not UTF-8)"]) from None
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read the {what} file: {err.strerror or err}"]) from None
    return parse_yaml(text, str(path))
