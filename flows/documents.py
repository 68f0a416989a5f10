"""Reading flow documents: JSON or YAML text, and files listed in ``POCKETRUN_FLOWS``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.errors import FlowDefinitionError, InvalidInput

SUFFIXES = (".json", ".yaml", ".yml")


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a few bytes of them can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def _json_only(value: Any, where: str = "document") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where}: key {key!r} is not a string")
            _json_only(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_only(item, f"{where}.{i}")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise InvalidInput(
            f"{where}: {type(value).__name__} is not JSON (quote dates and times in YAML)"
        )


def parse_text(text: str | bytes, *, yaml_text: bool) -> Any:
    """The document in ``text``; InvalidInput (422) when it is not JSON/YAML of JSON values."""
    if yaml_text:
        try:
            data = yaml.load(text, Loader=_SafeLoader)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"the body is not valid YAML: {exc}") from None
        _json_only(data)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("a flow document must be an object")
    return data


def is_document_path(entry: str) -> bool:
    return entry.lower().endswith(SUFFIXES)


def load_file(path: str) -> Any:
    """Register the flow in a ``.json``, ``.yaml`` or ``.yml`` file."""
    from flows.declarative import register_document

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowDefinitionError(f"can't read flow document {path}: {exc.strerror}") from None
    try:
        data = parse_text(text, yaml_text=file.suffix.lower() != ".json")
    except InvalidInput as exc:
        raise FlowDefinitionError(f"{path}: {exc.detail}") from None
    try:
        return register_document(data, origin=path)
    except FlowDefinitionError as exc:
        raise FlowDefinitionError(f"{path}: {exc.detail}", errors=exc.errors) from None
