#!/usr/bin/env python3
"""Validate one `qbak COMMAND --json` document against the schema.

  json-validate.py SCHEMA DEF [FILE]

DEF names the command's definition in the schema's $defs (info, map,
bitmap-list, bitmap-dump, bitmap-change, copy, backup, list, verify, prune,
protect, restore); FILE (default: stdin) must hold exactly one JSON
document.  --expect-failure also requires the failure object
(status, error, exit-code) and --expect-success forbids it.  Exit 0 if
valid; otherwise 1 with every error on stderr.
"""
import argparse
import json
import sys

import jsonschema


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('schema')
    ap.add_argument('definition')
    ap.add_argument('file', nargs='?')
    ap.add_argument('--expect-failure', action='store_true')
    ap.add_argument('--expect-success', action='store_true')
    a = ap.parse_args()
    with open(a.schema) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    if a.definition not in schema['$defs']:
        sys.exit(f'json-validate: no definition {a.definition!r}')
    text = open(a.file).read() if a.file else sys.stdin.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        sys.exit(f'json-validate: not one JSON document ({e}): {text!r}')
    ref = '#/$defs/failure' if a.expect_failure else \
        f'#/$defs/{a.definition}'
    validator = jsonschema.Draft202012Validator(
        {'$ref': ref, '$defs': schema['$defs']})
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if not errors and a.expect_success:
        failure = jsonschema.Draft202012Validator(
            {'$ref': '#/$defs/failure', '$defs': schema['$defs']})
        if failure.is_valid(doc):
            sys.exit(f'json-validate: a failure object, success expected: '
                     f'{text}')
    for e in errors:
        # a oneOf's own message hides why each branch failed
        for sub in sorted(e.context or [], key=lambda s: list(s.path)):
            print(f'  {list(sub.absolute_path)}: {sub.message}',
                  file=sys.stderr)
        print(f'{a.definition}: {list(e.absolute_path)}: {e.message}',
              file=sys.stderr)
    if errors:
        print(f'document: {text}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
