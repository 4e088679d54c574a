"""One self-contained HTML report of a run folder, or one comparison of several run folders.

``contrastkit report RUN_DIR`` (and ``contrastkit train``, after its plots) writes ``RUN_DIR/report.html``:
the run's facts (device, versions, seconds), every evaluation figure of ``summary.json`` beside its
baseline (``raw_`` keys: the raw inputs; ``base_``: the base model of a text run; ``scratch_``: the
network fine-tuned from random weights), the training
curves of ``metrics.jsonl``, the embedding map of ``plots/embedding.png`` and ``config.yaml``.
``contrastkit report RUN_A RUN_B ... --out FILE.html`` puts the runs side by side: one table with a
column per run and one set of curves with a line per run.

The file is meant to be mailed or attached to an issue, so it stands alone: no script, no network,
styles inline, figures as base64 PNG ``data:`` URIs, and a Content-Security-Policy that keeps a
browser from fetching anything even if a value slipped through. Every value is HTML-escaped.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from contrastkit import config as config_module
from contrastkit._atomic import write_atomic
from contrastkit.errors import ContrastkitError
from contrastkit.train.trainer import HEALTH_KEYS, read_metrics

REPORT_NAME = "report.html"
# summary.json keys that describe the run rather than score it; every other key is an evaluation figure.
RUN_KEYS = ("method", "dataset", "device", "world_size", "epochs", "steps", "train_seconds", "eval_seconds",
            "skipped_images")
# The prefixes of the baselines' figures and what the report calls them (scratch_: the finetune protocol's).
BASELINES = {"raw_": "raw input", "base_": "base model", "scratch_": "from scratch"}
_BASELINE_MEANINGS = {"raw_": "Raw input: the same protocol on the raw inputs",
                      "base_": "Base model: the same scores of the text encoder before training",
                      "scratch_": "From scratch: the same network fine-tuned from random weights on the same labels"}
# Training curves in this order, then any other number metrics.jsonl logged; "step" and "epoch" are the x axis.
CURVE_KEYS = ("loss", "lr", "samples_per_second", *HEALTH_KEYS)
# Config keys shown among the run's facts (the whole config.yaml follows the figures).
CONFIG_FACTS = ("modality", "backbone", "batch_size", "lr", "optimizer", "temperature", "seed")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MISSING = "\N{EM DASH}"


def versions() -> dict[str, str]:
    """The versions of Python, PyTorch and contrastkit in this process, as recorded in summary.json."""
    return {"python": platform.python_version(), "torch": _package_version("torch"),
            "contrastkit": _package_version("contrastkit")}


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # contrastkit run from a source tree that was not installed
        if name == "contrastkit":
            from contrastkit import __version__

            return __version__
        return "not installed"


@dataclasses.dataclass
class _RunFolder:
    """What the report shows of one run folder, read once."""

    path: Path
    name: str
    config_text: str
    config: dict[str, Any]
    summary: dict[str, Any] | None  # None while the run has no summary.json (training under way or stopped)
    records: list[dict[str, Any]]
    embedding_png: bytes | None


def _read_run(run_dir: Path) -> _RunFolder:
    """Read ``run_dir``, refusing a folder that is missing, is not a run, or holds an unreadable summary."""
    if not run_dir.exists():
        raise ContrastkitError(f"{run_dir} does not exist; give the --out folder of a `contrastkit train` run.")
    if not (run_dir / "config.yaml").is_file():
        raise ContrastkitError(f"{run_dir} is not a run folder (no config.yaml); give the --out folder of a "
                               "`contrastkit train` run.")
    config = config_module.load_yaml(run_dir / "config.yaml")
    summary_path = run_dir / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ContrastkitError(f"{summary_path} is unreadable ({' '.join(str(error).split())}); delete it and "
                                   f"score the run again with: contrastkit eval {run_dir}") from None
        if not isinstance(summary, dict):
            raise ContrastkitError(f"{summary_path} holds a JSON {type(summary).__name__}, not the object of a run's "
                                   f"figures; delete it and score the run again with: contrastkit eval {run_dir}")
    metrics = run_dir / "metrics.jsonl"
    try:
        records = read_metrics(metrics) if metrics.is_file() else []
    except UnicodeDecodeError:
        raise ContrastkitError(f"{metrics} is not the UTF-8 text contrastkit writes; delete it to report the run "
                               "without its training curves.") from None
    embedding = run_dir / "plots" / "embedding.png"
    embedding_png = embedding.read_bytes() if embedding.is_file() else None
    return _RunFolder(path=run_dir, name=run_dir.name or str(run_dir),
                      config_text=(run_dir / "config.yaml").read_text(encoding="utf-8"), config=config,
                      summary=summary, records=records,
                      embedding_png=embedding_png if embedding_png and embedding_png.startswith(_PNG_SIGNATURE)
                      else None)


def _default_output(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN_DIR/report.html`` for one run; several runs have no one folder of their own to hold it."""
    if len(run_dirs) != 1:
        raise ContrastkitError(f"a report of {len(run_dirs)} runs belongs to none of their folders; say where to "
                               "write it with --out FILE.html.")
    return Path(run_dirs[0]) / REPORT_NAME


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the HTML report of one run, or the comparison of several, atomically; return its path.

    Args:
        run_dirs: one run folder, or several to compare (one column and one curve per run).
        out: the HTML file, or a folder to hold ``report.html``; default ``RUN_DIR/report.html`` for
            one run; several runs need it.

    Raises:
        ContrastkitError: a folder is missing or not a run, or its summary.json is unreadable.
    """
    if not run_dirs:
        raise ContrastkitError("give at least one run folder to report on.")
    path = Path(out) if out is not None else _default_output(run_dirs)
    if path.is_dir():
        path = path / REPORT_NAME
    document = render_report(run_dirs).encode("utf-8")
    write_atomic(path, lambda file: file.write(document))
    return path


def render_report(run_dirs: Sequence[str | Path]) -> str:
    """The HTML of the report of ``run_dirs`` (one run, or a comparison of several).

    Args:
        run_dirs: one or more run folders of ``contrastkit train``.
    """
    runs = [_read_run(Path(run_dir)) for run_dir in run_dirs]
    _name_apart(runs)
    title = (f"{runs[0].config.get('method')} on {runs[0].config.get('dataset')}" if len(runs) == 1
             else f"{len(runs)} runs compared")
    sections = [_facts_section(runs), _evaluation_section(runs), _curves_section(runs), _embedding_section(runs)]
    if len(runs) > 1:
        sections.append(_config_differences_section(runs))
    sections.append(_config_section(runs))
    written = datetime.now().strftime("%Y-%m-%d %H:%M")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # The report must not reach out, even through a value the escaping missed: images only from data: URIs.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # else a browser asks the page's origin for /favicon.ico
        f"<title>contrastkit report: {_escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>contrastkit report: {_escape(title)}</h1>",
        f'<p class="note">Written {_escape(written)} by contrastkit {_escape(_package_version("contrastkit"))} '
        f"from {_escape(', '.join(str(run.path) for run in runs))}.</p>",
        *sections,
        "</body>",
        "</html>",
        "",
    ])


def _name_apart(runs: list[_RunFolder]) -> None:
    """Name each run by its folder, or by its path where two folders share a name (a column per run)."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.path)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 75em;
       padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
.best { font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figures figure { margin: 0; max-width: 36em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.4em 0; }
"""


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format(value: Any, *, figure: bool = False) -> str:
    """``value`` as the report shows it: evaluation figures to four places, the rest as summary.json has it."""
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and figure and math.isfinite(value):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _cell(value: Any, *, figure: bool = False, key: str | None = None, best: bool = False) -> str:
    """One escaped table cell; ``key`` (the summary.json key) becomes its tooltip."""
    classes = " ".join(name for name, on in (("number", _is_number(value)), ("best", best)) if on)
    attributes = (f' class="{classes}"' if classes else "") + (f' title="{_escape(key)}"' if key else "")
    return f"<td{attributes}>{_escape(_format(value, figure=figure))}</td>"


def _table(header: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{_escape(name)}</th>" for name in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _facts_section(runs: Sequence[_RunFolder]) -> str:
    """Where and how each run was made: its summary's run keys, a few config keys, the versions."""
    rows = []

    def add(label: str, values: Sequence[Any], key: str | None = None) -> None:
        rows.append(f"<tr><th>{_escape(label)}</th>{''.join(_cell(value, key=key) for value in values)}</tr>")

    summaries = [run.summary or {} for run in runs]
    add("run folder", [run.path for run in runs])
    for key in RUN_KEYS:
        if any(key in summary for summary in summaries):
            add(key, [summary.get(key) for summary in summaries])
    for key in CONFIG_FACTS:
        if any(key in run.config for run in runs):
            add(key, [run.config.get(key) for run in runs])
    recorded = [summary.get("versions") if isinstance(summary.get("versions"), dict) else None
                for summary in summaries]
    here = versions()
    for name in here:
        add(name, [found.get(name) if found else f"{here[name]} (this report's; the run did not record it)"
                   for found in recorded], key=f"versions.{name}")
    note = "" if all(run.summary is not None for run in runs) else (
        '<p class="note">A run without summary.json has not finished training (or is still under way): it has no '
        "evaluation or seconds yet.</p>")
    header = ["", *(run.name for run in runs)] if len(runs) > 1 else ["", "value"]
    return f"<section><h2>Run</h2>{_table(header, rows)}{note}</section>"


def _figure_keys(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The evaluation figures' names without a baseline prefix, in the order summary.json first has them."""
    names: dict[str, None] = {}
    for summary in summaries:
        for key in summary:
            if key in RUN_KEYS or key == "versions":
                continue
            prefix = next((prefix for prefix in BASELINES if key.startswith(prefix)), "")
            names.setdefault(key[len(prefix):], None)
    return list(names)


def _evaluation_section(runs: Sequence[_RunFolder]) -> str:
    summaries = [run.summary or {} for run in runs]
    names = _figure_keys(summaries)
    if not names:
        return ('<section><h2>Evaluation</h2><p class="note">No evaluation figures: summary.json is missing or holds '
                "none. Score a finished run with <code>contrastkit eval RUN_DIR</code>.</p></section>")
    baselines = [prefix for prefix in BASELINES if any(prefix + name in summary for name in names
                                                       for summary in summaries)]
    if len(runs) == 1:
        return _evaluation_of_one(summaries[0], names, baselines)
    rows = []
    for name in names:
        for prefix in ("", *baselines):
            key = prefix + name
            if not any(key in summary for summary in summaries):
                continue
            values = [summary.get(key) for summary in summaries]
            numbers = [value for value in values if _is_number(value) and math.isfinite(value)]
            # Only a row where the runs differ has a highest value worth marking.
            best = max(numbers) if len(set(numbers)) > 1 else None
            label = name if not prefix else f"{name} ({BASELINES[prefix]})"
            cells = "".join(_cell(value, figure=True, key=key, best=value == best and best is not None)
                            for value in values)
            rows.append(f"<tr><th>{_escape(label)}</th>{cells}</tr>")
    meanings = "".join(f" {_BASELINE_MEANINGS[prefix]}." for prefix in baselines)
    return (f"<section><h2>Evaluation</h2>{_table(['figure', *(run.name for run in runs)], rows)}"
            f'<p class="note">Bold: the highest of a row where the runs differ.{_escape(meanings)}</p></section>')


def _evaluation_of_one(summary: Mapping[str, Any], names: Sequence[str], baselines: Sequence[str]) -> str:
    """Each figure of the encoder beside each baseline's, and its difference to the baseline where
    the figure has one (fine-tuning is measured against training from scratch, the probes against
    the raw inputs)."""
    compared = {name: [prefix for prefix in baselines if _is_number(summary.get(prefix + name))] for name in names}
    difference = any(len(found) == 1 and _is_number(summary.get(name)) for name, found in compared.items())
    header = ["figure", "encoder", *(BASELINES[prefix] for prefix in baselines)]
    if difference:
        header.append("encoder \N{MINUS SIGN} " + (BASELINES[baselines[0]] if len(baselines) == 1 else "baseline"))
    rows = []
    for name in names:
        cells = [_cell(summary.get(name), figure=True, key=name if name in summary else None)]
        cells += [_cell(summary.get(prefix + name), figure=True, key=prefix + name if prefix + name in summary
                        else None) for prefix in baselines]
        if difference:
            encoder, found = summary.get(name), compared[name]
            shown = (f"{encoder - summary[found[0] + name]:+.4f}" if len(found) == 1 and _is_number(encoder)
                     else _MISSING)
            cells.append(f'<td class="number">{_escape(shown)}</td>')
        rows.append(f"<tr><th>{_escape(name)}</th>{''.join(cells)}</tr>")
    meanings = "".join(f"{_BASELINE_MEANINGS[prefix]}. " for prefix in baselines)
    note = f'<p class="note">{_escape(meanings)}Hover a figure for its summary.json key.</p>'
    return f"<section><h2>Evaluation</h2>{_table(header, rows)}{note}</section>"


def _curve_keys(runs: Sequence[_RunFolder]) -> list[str]:
    present = {key for run in runs for record in run.records for key, value in record.items() if _is_number(value)}
    present -= {"step", "epoch"}
    return [key for key in CURVE_KEYS if key in present] + sorted(present.difference(CURVE_KEYS))


def _curves_png(runs: Sequence[_RunFolder], keys: Sequence[str]) -> bytes:
    """Each of ``keys`` against the epoch (the step where a record lacks it), one line per run."""
    # Epochs line up runs of different batch sizes, which steps would not.
    x_key = "epoch" if all(_is_number(record.get("epoch")) for run in runs for record in run.records) else "step"
    columns = 2 if len(keys) > 1 else 1
    rows = math.ceil(len(keys) / columns)
    # Fixed margins (in inches, for any number of rows) rather than a layout engine, which took half
    # of the report's time in `train`.
    legend = 0.4 if len(runs) > 1 else 0.0
    height = 2.3 * rows + 0.3 + legend
    width = 11.0 if columns == 2 else 6.5
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height,
                        top=1 - (0.3 + legend) / height, hspace=0.6, wspace=0.2)
    for ax, key in zip(axes, keys):
        for run in runs:
            points = [(record[x_key], record[key]) for record in run.records
                      if _is_number(record.get(x_key)) and _is_number(record.get(key))
                      and math.isfinite(record[key])]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, linewidth=1.2, label=run.name)
        ax.set_title(key, fontsize="medium")
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if len(runs) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncols=min(len(runs), 4), frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _image(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_escape(alt)}">'


def _curves_section(runs: Sequence[_RunFolder]) -> str:
    keys = _curve_keys(runs)
    if not keys:
        return ('<section><h2>Training curves</h2><p class="note">No training curves: metrics.jsonl is missing or '
                "holds no logged step.</p></section>")
    return f"<section><h2>Training curves</h2>{_image(_curves_png(runs, keys), 'training curves')}</section>"


def _embedding_section(runs: Sequence[_RunFolder]) -> str:
    figures = []
    for run in runs:
        caption = f"<figcaption>{_escape(run.name)}</figcaption>" if len(runs) > 1 else ""
        body = (_image(run.embedding_png, f"embedding map of {run.name}") if run.embedding_png else
                '<p class="note">No readable plots/embedding.png; draw it with: contrastkit plot '
                f"{_escape(run.path)}</p>")
        figures.append(f"<figure>{body}{caption}</figure>")
    return f'<section><h2>Embedding</h2><div class="figures">{"".join(figures)}</div></section>'


def _config_differences_section(runs: Sequence[_RunFolder]) -> str:
    """The config keys whose values differ between the runs (``out`` aside: the run folder row has it)."""
    keys = [key for key in dict.fromkeys(key for run in runs for key in run.config)
            if key != "out" and len({json.dumps(run.config.get(key), sort_keys=True) for run in runs}) > 1]
    if not keys:
        return '<section><h2>Config differences</h2><p class="note">The runs share every config key.</p></section>'
    rows = [f"<tr><th>{_escape(key)}</th>{''.join(_cell(run.config.get(key)) for run in runs)}</tr>" for key in keys]
    return f"<section><h2>Config differences</h2>{_table(['key', *(run.name for run in runs)], rows)}</section>"


def _config_section(runs: Sequence[_RunFolder]) -> str:
    if len(runs) == 1:
        return f"<section><h2>Config (config.yaml)</h2><pre>{_escape(runs[0].config_text)}</pre></section>"
    blocks = "".join(f"<details><summary>{_escape(run.name)}</summary><pre>{_escape(run.config_text)}</pre></details>"
                     for run in runs)
    return f"<section><h2>Configs (config.yaml)</h2>{blocks}</section>"
