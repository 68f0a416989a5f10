"""The catalog's built-in node types: importing this module registers them all."""

from nodes import ask, branch, http_request, llm, schema_check, transform
from nodes.catalog import CATALOG

__all__ = ["CATALOG", "ask", "branch", "http_request", "llm", "schema_check", "transform"]
