#!/usr/bin/env python3
"""Fails on an #include that points up the layers (docs/architecture.md, "Layers").

The layers, lowest first; a file may include its own layer and the ones below it:
  common < model < tokenizer < runtime < backends/cpu, backends/cuda < engine < server < bench < apps
backends/cpu and backends/cuda are siblings (neither includes the other). The public headers:
include/nanoflow/engine.h is the engine's layer; request_output.h and sampling_params.h are plain
value types that every layer may use (the common layer). Tests and benchmarks may include
anything.

Usage: scripts/check_layers.py [repo root]. Prints each violation as file:line and exits 1 if
there is one. CTest runs it (test `layers`).
"""
import os
import re
import sys

LAYERS = {
    "common": 0,
    "model": 1,
    "tokenizer": 2,
    "runtime": 3,
    "backends/cpu": 4,
    "backends/cuda": 4,
    "engine": 5,
    "nanoflow": 5,  # include/nanoflow/engine.h: the engine's public API
    "nanoflow-types": 0,  # include/nanoflow/{request_output,sampling_params}.h: value types
    "server": 6,
    "bench": 7,
    "apps": 8,
}
INCLUDE = re.compile(r'^\s*#\s*include\s+[<"]([^">]+)[">]')


def layer_of_path(rel):
    """The layer of a header named by an include ("backends/cuda/x.h", "nanoflow/engine.h")."""
    parts = rel.split("/")
    if rel in ("nanoflow/request_output.h", "nanoflow/sampling_params.h"):
        return "nanoflow-types"
    if parts[0] == "backends" and len(parts) > 2:
        return "backends/" + parts[1]
    if parts[0] in LAYERS and len(parts) > 1:
        return parts[0]
    return None


def layer_of_file(root, path):
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    if rel.startswith("src/"):
        return layer_of_path(rel[4:])
    if rel.startswith("include/"):
        return layer_of_path(rel[len("include/"):])
    if rel.startswith("apps/"):
        return "apps"
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    bad = []
    checked = 0
    for top in ("src", "include", "apps"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if not f.endswith((".h", ".cpp", ".cu", ".cuh")):
                    continue
                path = os.path.join(dirpath, f)
                mine = layer_of_file(root, path)
                if mine is None:
                    continue
                checked += 1
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for n, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        theirs = layer_of_path(m.group(1))
                        if theirs is None or theirs == mine:
                            continue
                        siblings = LAYERS[theirs] == LAYERS[mine] and theirs.startswith("backends/")
                        if LAYERS[theirs] > LAYERS[mine] or siblings:
                            bad.append(f"{os.path.relpath(path, root)}:{n}: {mine} includes "
                                       f"{m.group(1)} ({theirs}, not below it)")
    for b in bad:
        print(b)
    print(f"check_layers: {checked} files, {len(bad)} includes pointing up")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
