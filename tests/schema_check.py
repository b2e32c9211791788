#!/usr/bin/python3
"""Test-only JSON Schema runner: the reference the C job validator is held to.

Usage: schema_check.py [--schema FILE] DIR

Prints one line per *.json file in DIR, sorted by name:

    <file>\t<valid|invalid|decode-error>

judged by Draft202012Validator (Debian's python3-jsonschema) against FILE
(default: schemas/job.schema.json next to this tests/ directory).

Decoding follows the C decoder (shoal_job_decode), so both sides agree on what
counts as JSON before the schema is asked: strict UTF-8 with no byte order
mark, no NaN/Infinity, no duplicate object keys, no \\u0000 and no lone
surrogates in strings, integers within int64, finite numbers, and at most 64
levels of nesting. Exit status: 0 when every file was judged, 2 on bad usage,
3 when jsonschema is not installed.
"""

import json
import math
import os
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:
    sys.stderr.write(
        "schema_check.py: python3-jsonschema is not installed "
        "(apt-get install python3-jsonschema)\n"
    )
    sys.exit(3)

MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class DecodeError(Exception):
    pass


def parse_int(text):
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise DecodeError("integer out of range")
    return value


def parse_float(text):
    value = float(text)
    if math.isinf(value):
        raise DecodeError("number out of range")
    return value


def parse_constant(text):
    raise DecodeError(f"{text} is not JSON")


def no_duplicates(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DecodeError(f"duplicate key {key!r}")
        seen.add(key)
    return dict(pairs)


def check_string(s):
    if "\x00" in s:
        raise DecodeError("NUL in string")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError("lone surrogate in string")


def check_tree(value, depth=0):
    if isinstance(value, dict):
        depth += 1
        if depth > MAX_DEPTH:
            raise DecodeError("too deep")
        for key, member in value.items():
            check_string(key)
            check_tree(member, depth)
    elif isinstance(value, list):
        depth += 1
        if depth > MAX_DEPTH:
            raise DecodeError("too deep")
        for member in value:
            check_tree(member, depth)
    elif isinstance(value, str):
        check_string(value)


def decode(raw):
    text = raw.decode("utf-8")  # strict: rejects invalid and surrogate sequences
    value = json.loads(
        text,
        parse_int=parse_int,
        parse_float=parse_float,
        parse_constant=parse_constant,
        object_pairs_hook=no_duplicates,
    )
    check_tree(value)
    return value


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    schema_path = os.path.join(here, "..", "schemas", "job.schema.json")
    args = argv[1:]
    if len(args) == 3 and args[0] == "--schema":
        schema_path, args = args[1], args[2:]
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.stderr.write("usage: schema_check.py [--schema FILE] DIR\n")
        return 2
    directory = args[0]

    with open(schema_path, "rb") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)

    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            raw = f.read()
        try:
            doc = decode(raw)
        except (ValueError, DecodeError, RecursionError):
            # ValueError covers UnicodeDecodeError and json.JSONDecodeError
            verdict = "decode-error"
        else:
            verdict = "valid" if validator.is_valid(doc) else "invalid"
        print(f"{name}\t{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
