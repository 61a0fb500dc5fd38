"""Message catalogues (i18n/<lang>.yaml) and Msg, a translatable sentence the Plan carries.

The Plan holds Msg(key, params) for its reasons, budget changes and risks; documents render
them in the pack's language; str(msg) is English (JSON, CLI summary). Formulas in Figure
rules stay as written (numbers and operators read the same in both languages).
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class Msg:
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang: str) -> str:
        return catalogue(lang)[self.key].format(**self.params)

    def __str__(self) -> str:
        return self.render("en")

    def __contains__(self, text: str) -> bool:
        return text in str(self)
