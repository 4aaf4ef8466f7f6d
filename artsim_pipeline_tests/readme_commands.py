"""The commands a README shows, read from its Markdown (a support module of ``test_readme_commands.py``).

* :func:`shell_commands`: every command of the fenced ``bash``/``sh``/``shell``/``console`` blocks (indented
  fences inside list items too), one per command as bash reads it: a line ending in ``\\`` goes on, and so
  does a quoted string that spans lines; comments and blank lines are dropped;
* :func:`python_snippets`: the body of every fenced ``python`` block;
* :func:`inline_commands`: the commands written in the prose as inline code (`` `dagster definitions validate
  -w workspace.yaml` ``): spans whose first word is a program (``artsim``, ``dagster``, ``pip``, ``bash``,
  ``curl``, ``python``) or a ``.venv/bin/`` path, line breaks inside a span read as spaces.

A command is named by :func:`command_key`: its words as bash splits them (comments dropped), every run of
white space made one space, so re-wrapping or re-aligning a README line keeps its name and changing a word
does not.
"""

from __future__ import annotations

import re
import shlex

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PROGRAMS = {"artsim", "dagster", "pip", "bash", "curl", "python"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, the fence's indentation removed from its lines."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, body, i = len(opening["indent"]), [], i + 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"a ``` block ({opening['lang'] or 'no language'}) is never closed")
        blocks.append((opening["lang"].lower(), "\n".join(body) + "\n"))
        i += 1
    return blocks


def split_commands(block: str) -> list[str]:
    """The commands of one shell block, each as written (continuation lines kept)."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        if words:
            commands.append(pending.strip())
        pending = ""
    if pending.strip():
        raise ValueError(f"a command is never finished: {pending!r}")
    return commands


def shell_commands(markdown: str) -> list[str]:
    return [c for lang, body in fenced_blocks(markdown) if lang in SHELL_LANGUAGES for c in split_commands(body)]


def python_snippets(markdown: str) -> list[str]:
    return [body for lang, body in fenced_blocks(markdown) if lang == "python"]


def prose(markdown: str) -> str:
    """The Markdown without its fenced blocks."""
    out, inside = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def inline_commands(markdown: str) -> list[str]:
    """Inline code spans of the prose that are commands, in order, each once."""
    found = []
    for span in re.findall(r"`([^`]+)`", prose(markdown)):
        text = " ".join(span.split())
        first = text.split(" ")[0]
        if (first in PROGRAMS and " " in text or first.startswith(".venv/bin/")) and text not in found:
            found.append(text)
    return found


def command_key(command: str) -> str:
    """A command's name: its words as bash splits them, comments dropped, joined by one space."""
    words = shlex.split(command.replace("\\\n", " "), comments=True)
    return " ".join(" ".join(words).split())
