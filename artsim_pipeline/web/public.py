"""Messages fit for a response body: the server's absolute paths hidden (:func:`public_message`)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from ..core.lake import DataLake


def public_message(text: str, lake: DataLake) -> str:
    """``text`` for a response body: the lake's absolute root becomes ``<data lake>`` and other absolute
    paths are cut to their last two parts (the server log keeps the full message)."""
    roots = {str(lake.root)}
    with contextlib.suppress(Exception):
        roots.add(str(Path(str(lake.root)).resolve()))
    for root in sorted(roots, key=len, reverse=True):
        if len(root) > 1:
            text = text.replace(root, "<data lake>")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + "/".join(m.group(0).rstrip("/").split("/")[-2:]), text)


_ABSOLUTE_PATH = re.compile(r"(?<![\w<>.:/])/(?:[\w.\-]+/){2,}[\w.\-]*")
