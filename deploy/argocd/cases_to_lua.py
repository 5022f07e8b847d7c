"""Turns every resource_customizations/<group>/<Kind>/health_test.yaml (Argo CD's
own test format) into one Lua file of cases for harness.lua, and checks that
argocd-cm-health.yaml embeds each health.lua verbatim.

Usage: python3 cases_to_lua.py DIR OUT.lua
"""

import pathlib
import sys

import yaml


class Loader(yaml.SafeLoader):
    """YAML as the API server's JSON has it: timestamps stay strings."""


Loader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)


def lua_string(s):
    out = ['"']
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\%03d" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def lua(value):
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    if isinstance(value, dict):
        # JSON nulls are absent in Argo CD's Lua tables too.
        items = (f"[{lua_string(str(k))}] = {lua(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot express {type(value).__name__} in Lua")


def main(root, out):
    root = pathlib.Path(root)
    cases = []
    for test_file in sorted(root.glob("resource_customizations/*/*/health_test.yaml")):
        kind_dir = test_file.parent
        script = kind_dir / "health.lua"
        for test in load(test_file)["tests"]:
            name = f"{kind_dir.parent.name}/{kind_dir.name} {test['inputPath']}"
            cases.append(
                "{"
                + f"name = {lua_string(name)}, "
                + f"script = {lua_string(str(script))}, "
                + f"expected = {lua(test['healthStatus'])}, "
                + f"obj = {lua(load(kind_dir / test['inputPath']))}"
                + "}"
            )
    if not cases:
        sys.exit(f"no health_test.yaml under {root}/resource_customizations")

    data = load(root / "argocd-cm-health.yaml")["data"]
    for script in sorted(root.glob("resource_customizations/*/*/health.lua")):
        key = f"resource.customizations.health.{script.parent.parent.name}_{script.parent.name}"
        if data.get(key) != script.read_text(encoding="utf-8"):
            sys.exit(f"argocd-cm-health.yaml: {key} differs from {script}")

    pathlib.Path(out).write_text("return {\n" + ",\n".join(cases) + "\n}\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
