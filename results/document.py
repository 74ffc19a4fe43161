"""A report as a list of blocks, rendered twice: Markdown (beside the PNGs) and one self-contained
HTML file with the images embedded as base64, so it can be mailed."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Block:
    kind: str  # h1 | h2 | p | list | table | image | code
    content: object
    caption: str = ""


def _md_table(df: pd.DataFrame) -> str:
    cells = [[str(c) for c in df.columns]] + [["" if v is None else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cells[0]) + " |",
             "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def to_markdown(blocks: list[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.content}")
        elif b.kind == "h2":
            out.append(f"## {b.content}")
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "table":
            out.append(_md_table(b.content))
        elif b.kind == "image":
            out.append(f"![{b.caption}]({Path(b.content).relative_to(base)})\n\n*{b.caption}*")
        elif b.kind == "code":
            out.append(f"```{b.caption}\n{str(b.content).rstrip()}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
td{white-space:nowrap}td:first-child{white-space:normal;overflow-wrap:anywhere}.table-wrap{overflow-x:auto;margin:0.5em 0}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}figcaption{font-style:italic;font-size:0.9em}"""


def to_html(blocks: list[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            # Numbers keep "12.3% ± 0.4%" on one line; a table wider than the page scrolls in its own box
            # instead of widening the page (headers and the first column wrap first).
            out.append(f"<div class='table-wrap'>{b.content.to_html(index=False, na_rep='', border=0, escape=True)}</div>")
        elif b.kind == "image":
            data = base64.b64encode(Path(b.content).read_bytes()).decode()
            out.append(f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif b.kind == "code":
            out.append(f"<pre>{html.escape(str(b.content))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
