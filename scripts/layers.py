#!/usr/bin/env python3
"""Checks the crate's module graph: no folder imports a later layer, and no
import cycle between modules. Run by scripts/test.sh; prints the graph with -v.

A module is a file under src/ (a folder's mod.rs is the folder). An import is
any `crate::a::b` path outside comments and tests; `super::` stays inside a
folder, which the layer check already covers.
"""
import os
import re
import sys

# Lowest first: a folder may use only those before it (and `error`).
LAYERS = ["error", "policy", "io", "kube|vault", "collector", "reloader", "daemon"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def layer_of(folder):
    for rank, names in enumerate(LAYERS):
        if folder in names.split("|"):
            return rank
    sys.exit(f"layers.py: {folder} is in no layer; add it to LAYERS")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return "::".join(rel)


def code_of(path):
    text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
    lines = (line for line in text.split("\n") if not line.lstrip().startswith("//"))
    return "\n".join(lines)


def uses(code, modules):
    """The modules `code` names through crate:: paths, nested groups included."""
    found = set()
    for start in re.finditer(r"\bcrate::", code):
        found |= paths_at(code, start.end(), "", modules)
    return found


def paths_at(code, at, prefix, modules):
    """Modules named by the path (or `{group}`) that starts at `at`."""
    if code.startswith("{", at):
        depth, end = 1, at + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(code[end], 0)
            end += 1
        found = set()
        for part in split_group(code[at + 1 : end - 1]):
            found |= paths_at(part, 0, prefix, modules)
        return found
    m = re.match(r"[A-Za-z_][\w]*(::[A-Za-z_][\w]*)*(::\{)?", code[at:])
    if not m:
        return set()
    path = m.group(0).rstrip("{").rstrip(":")
    full = [p for p in (prefix + "::" + path).split("::") if p]
    best = longest_module(full, modules)
    found = {best} if best else set()
    if m.group(2):
        found |= paths_at(code, at + m.end() - 1, "::".join(full), modules)
    return found


def split_group(text):
    parts, depth, last = [], 0, 0
    for i, c in enumerate(text):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(text[last:i].strip())
            last = i + 1
    parts.append(text[last:].strip())
    return [p for p in parts if p]


def longest_module(parts, modules):
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in modules:
            return name
    return None


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    files = {}
    for folder, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs") and name not in ("main.rs", "lib.rs"):
                path = os.path.join(folder, name)
                files[module_of(path)] = path
    modules = set(files)
    graph = {m: uses(code_of(p), modules) - {m} for m, p in files.items()}
    problems = []
    for m, deps in sorted(graph.items()):
        top = m.split("::")[0]
        for d in sorted(deps):
            # A folder's own modules may use each other and the folder's root.
            if d.split("::")[0] != top and layer_of(d.split("::")[0]) > layer_of(top):
                problems.append(f"{m} uses {d}, a later layer")
    for group in cycles(graph):
        problems.append("import cycle: " + " -> ".join(group))
    if "-v" in sys.argv:
        for m in sorted(graph):
            print(m, "->", ", ".join(sorted(graph[m])))
    for p in problems:
        print("layers.py:", p)
    print(f"layers.py: {len(modules)} modules, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
