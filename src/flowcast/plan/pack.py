"""build_pack: brief -> Plan -> files named stream_<artifact>_<pipeline>_<yyyymmdd>_vN.<ext>."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from flowcast.plan import diagrams, documents, iac
from flowcast.plan.brief import Brief, load_brief
from flowcast.plan.decide import Plan, decide
from flowcast.plan.loadplan import render_loadplan
from flowcast.plan.messages import Lang, Msg, catalogue
from flowcast.plan.naming import artifact_path
from flowcast.plan.probe import probe_source
from flowcast.plan.runconfig import render_config


@dataclass(frozen=True)
class PackResult:
    plan: Plan
    files: dict[str, Path]  # artifact name -> file or folder written
    config_path: Path | None

    def summary(self) -> str:
        c = self.plan.cost
        lines = [f"{name}: {path}" for name, path in self.files.items()]
        lines.append(
            f"monthly cost {c.total_budget_ccy:,.0f} {c.currency} (list prices as of {c.prices_as_of}) "
            f"{'within' if c.within_budget else 'OVER'} budget {c.budget:,.0f} {c.currency}"
        )
        lines += [f"change: {a}" for a in self.plan.adjustments] + [f"risk: {r}" for r in self.plan.risks]
        return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Msg):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (list, tuple)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def _cost_csv(plan: Plan) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["item", "region", "usd_per_month", "quantity", "unit", "rule"])
    for ln in plan.cost.lines:
        w.writerow([ln.item, ln.region, f"{ln.usd:.2f}", ln.quantity.value, ln.quantity.unit, ln.quantity.rule])
    w.writerow(["total", "", f"{plan.cost.total_usd:.2f}", "", "", f"= {plan.cost.total_budget_ccy:.2f} {plan.cost.currency}"])
    return buf.getvalue()


def build_pack(
    brief: Brief | str | Path,
    out_dir: str | Path,
    lang: Lang = "en",
    *,
    probe: str | Path | None = None,
    today: date | None = None,
    render: bool | None = None,
) -> PackResult:
    """Plan a brief and write its architecture pack into out_dir (created if missing).

    `probe`: a sample of the real source; its size caps the ladder (never upscale) and its
    frame rate sets fps and GOP length. Raises flowcast.plan.BriefError (bad brief, message
    names the field), flowcast.plan.UnknownLanguage or flowcast.plan.ProbeError.
    Never overwrites: an existing name gets the next vN.
    `render`: the Mermaid diagrams go to a diagrams folder as .mmd, and as .svg when Debian
    chromium and the mermaid npm package are here (None: when available; False: no folder).
    """
    catalogue(lang)  # fail on a bad language before writing anything
    b = brief if isinstance(brief, Brief) else load_brief(Path(brief))
    plan = decide(b, source=probe_source(Path(probe)) if probe else None)
    day = today or datetime.now(timezone.utc).date()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    want = set(b.deliverables) | {"decisions"}

    def write(artifact: str, ext: str, text: str) -> Path:
        path = artifact_path(out, artifact, b.pipeline, day, ext)
        path.write_text(text, encoding="utf-8")
        files[f"{artifact}.{ext}"] = path
        return path

    def write_dir(artifact: str, content: dict[str, str]) -> Path:
        path = artifact_path(out, artifact, b.pipeline, day, None)
        for rel, text in content.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text, encoding="utf-8")
        files[artifact] = path
        return path

    write("decisions", "md", documents.decisions(plan, lang, day))
    write("decisions", "json", json.dumps(_jsonable(plan), indent=2, ensure_ascii=False) + "\n")
    config_path = None
    config_text = render_config(plan)
    if "config" in want:
        config_path = write("config", "yaml", config_text)
    if "cost" in want:
        write("cost_carbon", "md", documents.cost(plan, lang, day))
        write("cost_carbon", "csv", _cost_csv(plan))
    if "docs" in want:
        arch = documents.DOCUMENTS["architecture"](plan, lang, day)
        figures, why = diagrams.diagram_files(arch) if render is not False else ({}, "rendering not asked for")
        if render is not False:
            folder = write_dir("diagrams", figures)
            svgs = sorted(n for n in figures if n.endswith(".svg"))
            arch += "\n" + (catalogue(lang)["diagrams_rendered"].format(folder=folder.name, files=", ".join(svgs)) if not why
                            else catalogue(lang)["diagrams_unrendered"].format(folder=folder.name, why=why)) + "\n"
        write("architecture", "md", arch)
        for name in ("encoding_ladder", "security", "slo_alerts", "runbooks", "loadtest_plan"):
            write(name, "md", documents.DOCUMENTS[name](plan, lang, day))
        write("alert_rules", "yaml", documents.prometheus_rules(plan))
        write("loadplan", "yaml", render_loadplan(plan))
        write("slos", "yaml", documents.slo_file(plan))
    if "iac" in want and plan.origins is not None:
        write_dir("terraform", iac.terraform(plan))
        write_dir("helm", iac.helm(plan, config_text))
    return PackResult(plan=plan, files=files, config_path=config_path)
