"""Message catalogues (i18n/<lang>.yaml) and Msg, a translatable sentence the Plan carries.

The Plan holds Msg(key, params) for its reasons, budget changes, risks, the rules of its
Figures (formula text), cost and carbon item names and budget levers; documents render them
in the pack's language; str(msg) is English (JSON, CSV, CLI summary). A rule that is only
numbers and operators stays a plain string.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

Lang = Literal["en", "pt-BR"]
LANGS: tuple[Lang, ...] = ("en", "pt-BR")


class UnknownLanguage(ValueError):
    pass


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    if lang not in LANGS:
        raise UnknownLanguage(f"unknown language {lang!r}; allowed: {', '.join(LANGS)}")
    text = resources.files("flowcast.plan").joinpath("i18n").joinpath(f"{lang}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


_GROUPED = re.compile(r"-?\d{1,3}(,\d{3})+")


def _grouped(v: Any, lang: str) -> Any:
    """A parameter pre-formatted with thousands separators ("25,793") in the language's style."""
    if lang == "pt-BR" and isinstance(v, str) and _GROUPED.fullmatch(v):
        return v.replace(",", ".")
    return v


@dataclass(frozen=True)
class Msg:
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang: str) -> str:
        # a parameter may itself be a Msg (a translated clause): render it in the same language
        params = {k: (v.render(lang) if isinstance(v, Msg) else _grouped(v, lang)) for k, v in self.params.items()}
        return catalogue(lang)[self.key].format(**params)

    def __str__(self) -> str:
        return self.render("en")

    def __contains__(self, text: str) -> bool:
        return text in str(self)


def render(text: "Msg | str", lang: str) -> str:
    """A Msg in `lang`, or a plain (language-neutral) string as is."""
    return text.render(lang) if isinstance(text, Msg) else text
