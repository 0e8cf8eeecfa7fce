"""A `Table` (analysis/tables.py) rendered for a terminal, as markdown, LaTeX, HTML or csv (the
tidy numbers, one line per cell)."""

from __future__ import annotations

import html
import io
import textwrap

import pandas as pd

from analysis.tables import Table

BOLD, RESET = "\033[1m", "\033[0m"


def to_text(t: Table, bold: bool = False, width: int = 100) -> str:
    """Aligned columns for a terminal: the best cell in ANSI bold when `bold` (stdout is a
    terminal), else marked "(best)"; the notes wrapped at `width` characters."""
    rows = [
        [f"{s} (best)" if (i, j) in t.best and not bold else s for j, s in enumerate(r)]
        for i, r in enumerate(t.rows)
    ]
    widths = [max(len(x) for x in col) for col in zip(t.header, *rows, strict=True)]

    def line(cells: list[str], i: int | None = None) -> str:
        out = []
        for j, (s, w, a) in enumerate(zip(cells, widths, t.aligns(), strict=True)):
            pad = " " * (w - len(s))
            if bold and (i, j) in t.best:  # the padding stays outside the bold
                s = f"{BOLD}{s}{RESET}"
            out.append(pad + s if a == "r" else s + pad)
        return "  ".join(out).rstrip()

    out = [t.title, "", line(t.header), "  ".join("-" * w for w in widths)]
    out += [line(r, i) for i, r in enumerate(rows)]
    notes = [*t.notes, *(["(best cell in bold)"] * bool(t.best and bold))]
    if not bold:  # the notes' "(in bold)" (analysis/significance.py) reads as the mark here
        notes = [n.replace("(in bold)", "(marked best)") for n in notes]
    if notes:
        out.append("")
    for n in notes:
        out += textwrap.wrap(n, max(40, width), break_on_hyphens=False) or [""]
    return "\n".join(out) + "\n"


def to_markdown(t: Table) -> str:
    def cell(i: int, j: int, s: str) -> str:
        s = s.replace("|", "\\|")
        return f"**{s}**" if (i, j) in t.best else s

    out = [f"{t.title}", "", "| " + " | ".join(t.header) + " |"]
    out.append("|" + "|".join("---:" if a == "r" else "---" for a in t.aligns()) + "|")
    out += [
        "| " + " | ".join(cell(i, j, s) for j, s in enumerate(r)) + " |"
        for i, r in enumerate(t.rows)
    ]
    out += [""] + [f"{n}" for n in t.notes] + ["(best cell in bold)"] * bool(t.best)
    return "\n".join(out) + "\n"


_TEX = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "±": r"$\pm$",
    "μ": r"$\mu$",
    "—": "---",
}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    def cell(i: int, j: int, s: str) -> str:
        return rf"\textbf{{{_tex(s)}}}" if (i, j) in t.best else _tex(s)

    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex(t.title)}}}",
        r"\begin{tabular}{" + t.aligns() + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in t.header) + r" \\",
        r"\midrule",
    ]
    out += [
        " & ".join(cell(i, j, s) for j, s in enumerate(r)) + r" \\" for i, r in enumerate(t.rows)
    ]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    out += [f"% {n}" for n in t.notes]
    return "\n".join(out) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    if t.data is not None:
        t.data.to_csv(buf, index=False)
    else:
        pd.DataFrame(t.rows, columns=t.header).to_csv(buf, index=False)
    return buf.getvalue()


def to_html(t: Table) -> str:
    esc = html.escape
    out = [f"<table><caption>{esc(t.title)}</caption>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in t.header]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(t.rows):
        tds = [
            f'<td class="best">{esc(s)}</td>' if (i, j) in t.best else f"<td>{esc(s)}</td>"
            for j, s in enumerate(r)
        ]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{esc(n)}</p>' for n in t.notes]
    return "\n".join(out)


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv, "html": to_html}


def for_terminal(t: Table) -> str:
    """`to_text` as `amm table` prints it: bold (unless $NO_COLOR is set) and the notes' width
    from stdout's terminal; plain and 100 wide into a pipe or a file."""
    import shutil
    import sys

    from amm_core.settings import no_color

    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((100, 24)).columns if tty else 100
    return to_text(t, bold=tty and not no_color(), width=width)
