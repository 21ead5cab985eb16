#!/usr/bin/env python3
"""Renders bench/results/latest.json as the Markdown table the README shows."""
import json, os, sys

r = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results/latest.json")))
m = r["machine"]
fmt = lambda x: f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"
print(f"Measured {m['date']} on {m['cpu']}, {m['mem']}, Linux {m['kernel']}, {m['rounds']} alternating rounds.")
print("Ceilings in the same run: " + ", ".join(f"{k} {fmt(v)}" for k, v in r["ceilings"].items()) + ".")
if r.get("fractions"):
    print("registryd against its ceiling: " + ", ".join(f"{k} {v:.0%}" for k, v in r["fractions"].items()) + ".")
print()
print("| scenario | registryd median (min–max) | Distribution 2.8.2 median (min–max) | registryd advantage |")
print("| --- | --- | --- | --- |")
for t in r["results"]:
    a, b = t["registryd"], t["distribution"]
    print(f"| {t['scenario']} | {fmt(a['median'])} ({fmt(a['min'])}–{fmt(a['max'])}) | "
          f"{fmt(b['median'])} ({fmt(b['min'])}–{fmt(b['max'])}) | {t['advantage']:.2f}× |")
