"""The flame graph formats by name, with how each is served and saved.

No imports: the CLI's `--format` choices come from here, and the `pyrometer` command
builds every subcommand's parser at start-up, so this must not load the renderers
(registry.py binds each name to its renderer).
"""

from __future__ import annotations

NAMES = ("json", "folded", "speedscope", "pprof", "html")
CONTENT_TYPES = {
    "json": "application/json",
    "folded": "text/plain; charset=utf-8",
    "speedscope": "application/json",
    # what Go's net/http/pprof serves; consumers sniff the gzip magic themselves
    "pprof": "application/octet-stream",
    "html": "text/html; charset=utf-8",
}
EXTENSIONS = {  # without the leading dot
    "json": "json", "folded": "folded", "speedscope": "speedscope.json", "pprof": "pb.gz",
    "html": "html",
}
