"""The differential tests' oracle: reads dotenv files with python-dotenv, exactly as Modal's
Secret.from_dotenv does (dotenv_values(path), interpolation on), for tests/dotenv_diff.

Speaks JSON lines on stdin/stdout, one process for a whole test run:
  {"op": "version"}            -> {"version": "1.2.4"}
  {"op": "environ"}            -> {"environ": {...}}   the os.environ that ${VAR} falls back to
  {"op": "read", "path": P}    -> {"values": {...}, "refuse": R}
where values is dotenv_values(P) (null for a key without "=") and R is null, or the first
statement, in file order, that secretref refuses: {"kind": "syntax" | "no_value" |
"invalid_key", "line": N, "key": K}. python-dotenv itself warns about and skips a statement it
cannot parse ("syntax"); its parse_stream yields those statements in order, with the text from
which the line where each really starts (past the blank lines before it) is counted.
"""

import json
import logging
import os
import re
import sys

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from dotenv.version import __version__

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Warnings(logging.Handler):
    """Collects the lines python-dotenv warns it could not parse."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.args[0])


warnings = Warnings()
logging.getLogger("dotenv.main").addHandler(warnings)
logging.getLogger("dotenv.main").propagate = False


def refusals(path):
    """The statements secretref refuses, in file order, and the lines python-dotenv warns about."""
    found, warned = [], []
    with open(path, encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            text = binding.original.string
            leading = text[: len(text) - len(text.lstrip())]
            line = binding.original.line + leading.count("\n")
            if binding.error:
                found.append({"kind": "syntax", "line": line})
                warned.append(binding.original.line)
            elif binding.key is None:
                continue
            elif binding.value is None:
                found.append({"kind": "no_value", "line": line})
            elif not ENV_KEY.fullmatch(binding.key):
                found.append({"kind": "invalid_key", "line": line, "key": binding.key})
    return found, warned


def read(path):
    warnings.lines.clear()
    try:
        values = dotenv_values(path)
    except UnicodeDecodeError:
        return {"values": {}, "refuse": {"kind": "unreadable", "line": 0}}
    found, warned = refusals(path)
    if warned != warnings.lines:
        raise AssertionError(f"parse_stream errors {warned} but dotenv_values warned {warnings.lines}")
    return {"values": values, "refuse": found[0] if found else None}


def main():
    for request in sys.stdin.buffer:
        request = json.loads(request)
        if request["op"] == "version":
            answer = {"version": __version__}
        elif request["op"] == "environ":
            answer = {"environ": dict(os.environ)}
        elif request["op"] == "read":
            answer = read(request["path"])
        else:
            answer = {"error": f"unknown op {request['op']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


main()
