#!/usr/bin/env python3
"""Renders the cairn Helm chart (k8s/chart) with its default values into plain manifests
(k8s/manifests), for clusters without Helm. The templates use only `{{ .Values.a.b }}` and
`{{ .Release.Namespace }}`, so this renders them exactly as Helm does.

  tools/render_chart.py [--namespace cairn] [--out k8s/manifests] [--check]

--check renders into memory and exits 1 when k8s/manifests differs (CI keeps them in sync).
"""
import argparse
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "k8s", "chart")
TOKEN = re.compile(r"\{\{-?\s*([^}]*?)\s*-?\}\}")


def render_text(text, values, namespace):
    def value(expr):
        if expr == ".Release.Namespace":
            return namespace
        if not expr.startswith(".Values."):
            raise SystemExit("unsupported template expression: {{ %s }}" % expr)
        v = values
        for part in expr[len(".Values."):].split("."):
            if not isinstance(v, dict) or part not in v:
                raise SystemExit("no value %s" % expr)
            v = v[part]
        if isinstance(v, (dict, list)):
            raise SystemExit("%s is not a scalar" % expr)
        return str(v)
    return TOKEN.sub(lambda m: value(m.group(1)), text)


def render(namespace):
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    out = {"namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n" % namespace}
    tdir = os.path.join(CHART, "templates")
    for name in sorted(os.listdir(tdir)):
        if name.endswith(".yaml"):
            header = "# Rendered from k8s/chart/templates/%s by tools/render_chart.py: edit the chart.\n" % name
            out[name] = header + render_text(open(os.path.join(tdir, name)).read(), values, namespace)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespace", default="cairn")
    ap.add_argument("--out", default=os.path.join(ROOT, "k8s", "manifests"))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    files = render(a.namespace)
    if a.check:
        stale = [n for n, t in files.items()
                 if not os.path.exists(os.path.join(a.out, n)) or open(os.path.join(a.out, n)).read() != t]
        extra = set(os.listdir(a.out)) - set(files)
        if stale or extra:
            print("k8s/manifests is not the rendered chart (run tools/render_chart.py): %s"
                  % sorted(set(stale) | extra))
            return 1
        return 0
    os.makedirs(a.out, exist_ok=True)
    for n, t in files.items():
        with open(os.path.join(a.out, n), "w") as f:
            f.write(t)
    print("wrote %d manifests to %s" % (len(files), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
