"""Model cards rendered from a template file (``templates/model_card.md``).

The prose lives in the template; code computes only the values and tables that fill it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from string import Template

TEMPLATE = "model_card.md"


def render_model_card(values: Mapping[str, str]) -> str:
    """The card with every ``$name`` of the template filled; a missing value is an error."""
    text = (
        resources.files("scrclf.reporting")
        .joinpath("templates", TEMPLATE)
        .read_text(encoding="utf-8")
    )
    return Template(text).substitute(values)
