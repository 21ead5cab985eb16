"""The config file of a test's daemon: the default test config (argv[1], TOML) with the test's
fragment (argv[2], TOML: the sections it cares about) merged over it, printed as TOML.

A table in the fragment is merged key by key into the default's table of the same name; any
other value (a key, an array, an array of tables such as [[access]]) replaces the default's.
"""
import json
import sys
import tomllib


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise SystemExit(f"test_config.py: cannot write {v!r} as a TOML value")


def is_table_array(v):
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def write(table, path, out):
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not is_table_array(v)}
    if path and (plain or not table):
        out.append(f"[{'.'.join(path)}]")
    for k, v in plain.items():
        out.append(f"{k} = {value(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            write(v, path + [k], out)
        elif is_table_array(v):
            for item in v:
                out.append(f"[[{'.'.join(path + [k])}]]")
                for ik, iv in item.items():
                    out.append(f"{ik} = {value(iv)}")


def main():
    config = merge(tomllib.loads(sys.argv[1]), tomllib.loads(sys.argv[2]))
    out = []
    write(config, [], out)
    print("\n".join(out))


main()
