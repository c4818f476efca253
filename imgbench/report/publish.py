"""A run made public: its summary, plots and setting copied into docs/results/DATASET/, and its
headline table written into the README and docs pages that ask for it.

    imgbench publish results/sample            # from the workflow's directory

A page asks for a run's headline with a pair of marker lines; everything between them is
replaced by the headline table of that run and one line naming it (date, commit, machine):

    <!-- published:sample:headline -->
    <!-- /published -->

So the figures in the README and the docs are copies of one run, never typed by hand.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..workflow.runs import load as load_runs
from . import claims, codecs
from .headline import answers
from .summary import integrity_tables

END = "<!-- /published -->"


class PublishError(UserError, ValueError):
    """The results directory or the pages cannot be published as asked."""


def _run(run: dict) -> str:
    when = (run.get("finished") or "an unrecorded date")[:10]
    commit = run.get("commit") or "an unrecorded commit"
    if run.get("dirty"):
        commit += " with uncommitted changes"
    took = ""
    if run.get("seconds") is not None:
        minutes, secs = divmod(round(run["seconds"]), 60)
        took = f"; `snakemake` took {minutes} min {secs} s for {run.get('jobs', '?')} jobs"
    return f"on {when} at commit {commit}{took}"


def run_line(runs: list[dict], timings: pd.DataFrame) -> str:
    """One line naming the runs that measured (those that ran timing jobs: a later one may have
    redone only some), where they ran, and a later run that only redrew tables and plots."""
    m = timings.iloc[0]
    timed = [r for r in runs if r.get("timing_jobs")] or runs[-1:] or [{}]
    shown = "; ".join(f"{_run(r)}" + (f" ({r['timing_jobs']} timing jobs)" if len(timed) > 1 else "")
                      for r in timed[-3:])
    earlier = f" and {len(timed) - 3} earlier runs" if len(timed) > 3 else ""
    line = (f"Measured {shown}{earlier}, on {m['cpu']} ({int(m['cores'])} cores, {m['filesystem']}), "
            f"Python {m['python']}, numpy {m['numpy']}.")
    if runs and runs[-1] is not timed[-1]:
        line += f" Tables and plots redrawn {_run(runs[-1])} (no timing job ran again)."
    return line


def headline_table(timings: pd.DataFrame, integrity: pd.DataFrame | None) -> list[str]:
    n, rows = answers(timings, integrity)
    lines = ["| question | winner | its figure | by how much |", "|---|---|---|---|"]
    lines += [f"| {a.question} | **{a.winner or '–'}** | {a.figure or '–'} | {a.margin} |" for a in rows]
    return lines


def replace_blocks(text: str, dataset: str, block: list[str], kind: str = "headline") -> tuple[str, int]:
    """`text` with every `published:DATASET:KIND` block replaced by `block`; how many."""
    start = f"<!-- published:{dataset}:{kind} -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(END), re.S)
    return pattern.subn(lambda _: "\n".join([start, *block, END]), text)


def publish(results, docs="docs", pages=("README.md",), log=print) -> Path:
    """Copy the run in `results` (results/DATASET) into `docs`/results/DATASET and fill the
    headline blocks of `pages` and of every Markdown page in `docs`. Returns the copy's folder."""
    results, docs = Path(results), Path(docs)
    timings_csv = results / "timings.csv"
    if not timings_csv.is_file():
        raise PublishError(f"{results} holds no timings.csv: run the workflow first (snakemake --cores 4 "
                           f"--config dataset={results.name}), then publish its results directory")
    timings = pd.read_csv(timings_csv)
    if timings.empty:
        raise PublishError(f"{timings_csv} is empty: nothing to publish")
    integrity = pd.read_csv(results / "integrity.csv") if (results / "integrity.csv").is_file() else None
    runs = load_runs(results / "run.json")
    dataset = str(timings.iloc[0]["dataset"])
    out = docs / "results" / dataset
    if out.exists():
        shutil.rmtree(out)
    (out / "plots").mkdir(parents=True)
    for f in sorted((results / "plots").glob("*.png")):
        shutil.copy2(f, out / "plots" / f.name)
    if (results / "summary.md").is_file():
        shutil.copy2(results / "summary.md", out / "summary.md")
    line = run_line(runs, timings)
    (out / "run.md").write_text("\n".join([
        f"# The published run: {dataset}", "", line, "",
        *[f"Command: `{r.get('command', 'snakemake')}` ({_run(r).removeprefix('on ')})" for r in runs[-5:]], "",
        f"Its tables: [summary.md](summary.md); its plots: [plots/](plots/). Published with "
        f"`imgbench publish {results}`.", ""]))
    blocks = {"headline": [line, "", *headline_table(timings, integrity)],
              "claims": claims.table(timings)[4:-1]}  # the table, without the summary's heading
    if integrity is not None:
        blocks["integrity"] = integrity_tables(integrity)[2:]
    if (results / "codecs.csv").is_file():
        rows = pd.read_csv(results / "codecs.csv")
        f = codecs.frame(rows)
        if not f.empty:  # the codecs table (without its heading), and its three answers alone
            blocks["codecs"] = [line, "", *codecs.table(rows)[2:-1]]
            blocks["codecs-answers"] = [line, "", *codecs.answers(f, codecs.recompression(rows))]
    filled = 0
    for page in [*map(Path, pages), *sorted(docs.glob("*.md"))]:
        if not page.is_file():
            continue
        text, k = page.read_text(), 0
        for kind, block in blocks.items():
            text, got = replace_blocks(text, dataset, block, kind)
            k += got
        if k:
            page.write_text(text)
            filled += k
            log(f"filled {k} headline block(s) of {dataset} in {page}")
    log(f"published {results} to {out} ({len(list((out / 'plots').iterdir()))} plots); {filled} block(s) filled")
    return out
