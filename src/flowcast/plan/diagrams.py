"""The pack's Mermaid diagrams: kept as .mmd, rendered to SVG when a renderer is available.

The renderer is the `mermaid` npm package (installed under src/flowcast/web/node_modules at
set-up time, never copied into the repo) running in Debian's headless Chromium, driven by
the Python `playwright` package with executable_path=/usr/bin/chromium: Playwright's own
browser download never runs. Without Chromium, the npm package or playwright, the pack keeps
the .mmd sources and says they are unrendered.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
MERMAID_JS = Path(__file__).resolve().parents[1] / "web" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
RENDER_ENV = "FLOWCAST_PLAN_RENDER"  # "0": never render (keep .mmd only)
_BLOCK = re.compile(r"```mermaid\n(.*?)```", re.S)


class RenderError(RuntimeError):
    """Mermaid could not render a diagram (the message is Mermaid's own)."""


def mermaid_blocks(markdown: str) -> list[str]:
    """The Mermaid sources in a Markdown document, in order."""
    return [m.group(1) for m in _BLOCK.finditer(markdown)]


def unavailable_reason() -> str | None:
    """None when SVGs can be rendered here; otherwise what is missing."""
    if os.environ.get(RENDER_ENV) == "0":
        return f"rendering switched off ({RENDER_ENV}=0)"
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return "Debian chromium is not installed"
    if not MERMAID_JS.is_file():
        return "the mermaid npm package is not installed (cd src/flowcast/web && npm ci)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


def render_svgs(sources: list[str], timeout_s: float = 60.0) -> list[str]:
    """SVG text for each Mermaid source, rendered by mermaid.render() in headless Chromium."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(FLAGS))
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_s * 1000)
            page.set_content("<!doctype html><html><body></body></html>")
            page.add_script_tag(path=str(MERMAID_JS))
            try:
                return page.evaluate(
                    """async (sources) => {
                        mermaid.initialize({startOnLoad: false, securityLevel: 'strict', htmlLabels: false,
                                            flowchart: {htmlLabels: false}});
                        const out = [];
                        for (let i = 0; i < sources.length; i++) {
                            const {svg} = await mermaid.render('flowcast-diagram-' + i, sources[i]);
                            out.push(svg);
                        }
                        return out;
                    }""",
                    sources,
                )
            except PlaywrightError as exc:
                raise RenderError(str(exc).splitlines()[0]) from None
        finally:
            browser.close()


def diagram_files(markdown: str, names: tuple[str, ...] = ("flow", "failover")) -> tuple[dict[str, str], str | None]:
    """({file name: text}, why unrendered or None): every diagram as .mmd, plus .svg when rendered."""
    sources = mermaid_blocks(markdown)
    stems = [names[i] if i < len(names) else f"diagram_{i + 1}" for i in range(len(sources))]
    files = {f"{stem}.mmd": src for stem, src in zip(stems, sources)}
    why = unavailable_reason()
    if why is None and sources:
        try:
            files.update({f"{stem}.svg": svg for stem, svg in zip(stems, render_svgs(sources))})
        except Exception as exc:  # noqa: BLE001 - a failed render leaves the .mmd and says why
            why = f"render failed: {type(exc).__name__}: {exc}"
    return files, why
