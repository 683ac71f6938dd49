"""HTML building blocks and the page around the sections.

The page is one self-contained file: the style sheet inline (style.css), every picture a PNG
data URI, no scripts. The "how to read this" notes are prose in howto.toml.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import io
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

EMBEDDED_IMAGE_MAX_WIDTH = 1000  # px; larger pictures are downscaled before embedding


@functools.cache
def style_sheet() -> str:
    return resources.files(__package__).joinpath("style.css").read_text(encoding="utf-8")


@functools.cache
def how_to_read_notes() -> dict[str, str]:
    """Section key -> its "how to read this" note (howto.toml)."""
    return tomllib.loads(
        resources.files(__package__).joinpath("howto.toml").read_text(encoding="utf-8"))


def how_to_read(key: str) -> str:
    return f'<p class="howto"><b>How to read this.</b> {html.escape(how_to_read_notes()[key])}</p>'


def empty(text: str) -> str:
    """A note where a section (or one run of it) has nothing to show."""
    return f'<p class="empty">{html.escape(text)}</p>'


def figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def gallery(figures: list[str], notes: list[str], nothing: str) -> str:
    """Figures side by side, then notes on runs without a figure; `nothing` when both are empty."""
    if not figures and not notes:
        return empty(nothing)
    grid = f'<div class="figures">{"".join(figures)}</div>' if figures else ""
    return grid + "".join(empty(note) for note in notes)


def html_table(frame: pd.DataFrame, row_class: Callable[[dict], str] = lambda row: "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        f'<tr class="{row_class(row)}">'
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in frame.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def embeddable_png(path: Path, max_width: int = EMBEDDED_IMAGE_MAX_WIDTH,
                   colours: int | None = None) -> bytes | None:
    """The image as PNG bytes, downscaled to max_width and, with `colours`, reduced to a
    palette of that many colours (photographs compress several times smaller); None if
    unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.width > max_width:
                height = round(image.height * max_width / image.width)
                image = image.resize((max_width, height), Image.LANCZOS)
            if colours is not None:
                image = image.convert("RGB").quantize(colours)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, UnidentifiedImageError):
        return None


def render_page(workdir: Path, banner: str, banner_class: str,
                sections: list[tuple[str, str, str]]) -> str:
    """The whole page: title, banner, contents, then each (id, title, html) section."""
    toc = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>'
                  for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    written = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>jaxfundus report</title>"
        f"<style>{style_sheet()}</style></head><body>"
        "<h1>jaxfundus: disease and anomaly detection in fundus photographs</h1>"
        f"<p>Results in <code>{html.escape(str(workdir))}</code>, written {written}.</p>"
        f'<div class="banner {banner_class}">{html.escape(banner)}</div>'
        f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>{body}</body></html>\n")
