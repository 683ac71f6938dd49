"""The report: a summary table of the whole task matrix (summary.csv, summary.md) and one
self-contained HTML page with the study's figures redone from the results layout.

    load.py      the runs of the matrix (through jaxfundus.runs only) and what the page needs
    tables.py    the summary table: numbers (summary.csv) and text for people (summary.md)
    page.py      HTML building blocks and the page; style.css and howto.toml are its data
    sections/    one small function per section of the page, in the order of SECTIONS
    plots.py     the figures, as PNG bytes
    write.py     write_report: the three files

Nothing here imports jax: the report reads what runs wrote, so it works on any machine.
"""

from jaxfundus.report.write import summary_table, write_report

__all__ = ["summary_table", "write_report"]
