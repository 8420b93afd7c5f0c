"""The one Jinja2 environment the status page and the badges render through.

Starlette's :class:`~starlette.templating.Jinja2Templates` over
``monitor/web/templates/``. Autoescaping is on for every template, not chosen
by file extension: the badge is SVG, which ``select_autoescape`` would leave
unescaped, and every value a template prints may come from configuration or a
probed response. Undefined names raise instead of rendering as nothing, so a
snapshot key that went missing fails a test rather than blanking a line.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from starlette.templating import Jinja2Templates

from monitor.web.formats import duration, milliseconds, percent, plural, when

__all__ = ["TEMPLATES"]

TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        # block tags on lines of their own leave no blank lines or indentation behind
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the package; never stat them per render
    )
)
TEMPLATES.env.filters.update(
    duration=duration, ms=milliseconds, pct=percent, plural=plural, when=when
)
