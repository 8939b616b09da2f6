"""Reading XLA's optimised HLO text in tests: the instructions a compiled loop runs, and the
number of elements an instruction's result holds."""

import re

import numpy as np


def loop_body_ops(hlo: str) -> list[str]:
    """Instruction lines of the computations a ``while`` loop runs (its body, condition and
    everything they call), from XLA's optimised HLO text."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            name = head.group(1)
            comps[name] = []
        elif name is not None and line.startswith("  "):
            comps[name].append(line)
    called = lambda lines: {c for line in lines for c in re.findall(
        r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", line)}
    todo = {b for lines in comps.values() for line in lines if " while(" in line
            for b in re.findall(r"(?:body|condition)=%?([\w.\-]+)", line)}
    seen = set()
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        todo |= called(comps[c])
    return [line for c in seen for line in comps[c]]


def elements(line: str) -> int:
    """The number of elements of an HLO instruction line's (first) result shape, 0 if none."""
    shape = re.search(r"= \w+\[([\d,]*)\]", line)
    return int(np.prod([int(d) for d in shape.group(1).split(",") if d])) if shape else 0
