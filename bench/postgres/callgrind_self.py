#!/usr/bin/env python3
"""Self cost (Ir) per function in a callgrind output file, inlined code counted in the function
it was inlined into. Usage: callgrind_self.py FILE [DIVISOR] [TOP]"""
import re
import sys

path = sys.argv[1]
div = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
names = {}
cost = {}
fn = None
skip = False
total = 0
for line in open(path, errors="replace"):
    if line.startswith("fn="):
        m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m.group(2):
            names[m.group(1)] = m.group(2)
        fn = names.get(m.group(1), m.group(1))
        continue
    if line.startswith("calls="):
        skip = True  # the next cost line is the callee's inclusive cost
        continue
    if line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
        m = re.match(r"c(?:fn|fi|fl|ob)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m and m.group(2) and line.startswith("cfn="):
            names[m.group(1)] = m.group(2)
        continue
    if fn is None or not line[:1] in "0123456789+-*":
        continue
    parts = line.split()
    if len(parts) < 2:
        continue
    if skip:
        skip = False
        continue
    v = int(parts[1])
    cost[fn] = cost.get(fn, 0) + v
    total += v
print(f"{total / div:9.0f}  total")
for name, v in sorted(cost.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{v / div:9.0f}  {name[:150]}")
