#!/usr/bin/env python3
"""Validate `qbak COMMAND --json` documents against the schema.

  json-validate.py SCHEMA DEF FILE [DEF FILE ...]

DEF names the command's definition in the schema's $defs (info, map,
bitmap-list, bitmap-dump, bitmap-change, copy, backup, list, verify, prune,
protect, restore), optionally followed by "+ok" (the document must not be
the failure object) or "+failed" (it must be a failure: status, error,
exit-code, not 0); FILE must hold exactly one JSON document.  Several
pairs are checked in one run, since loading jsonschema is the slow part.
Exit 0 if every document is valid; otherwise 1 with every error on stderr.
"""
import json
import sys

import jsonschema


def validator(defs, name):
    return jsonschema.Draft202012Validator({'$ref': f'#/$defs/{name}',
                                            '$defs': defs})


def check(defs, spec, path):
    """The errors of the document in PATH against SPEC, as lines."""
    name, _, want = spec.partition('+')
    if name not in defs:
        return [f'{path}: no definition {name!r} in the schema']
    text = open(path).read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [f'{path}: not one JSON document ({e}): {text!r}']
    out = []
    for e in sorted(validator(defs, name).iter_errors(doc),
                    key=lambda e: list(e.path)):
        # a oneOf's own message hides why each branch failed
        for sub in sorted(e.context or [], key=lambda s: list(s.path)):
            out.append(f'  {list(sub.absolute_path)}: {sub.message}')
        out.append(f'{path}: {name}: {list(e.absolute_path)}: {e.message}')
    is_failure = validator(defs, 'failure').is_valid(doc)
    if name == 'copy' and isinstance(doc, dict):
        # copy's failure is its result with the failure's keys
        is_failure = doc.get('exit-code', 0) != 0 and 'error' in doc
    if want == 'ok' and is_failure:
        out.append(f'{path}: {name}: a failure, success expected')
    if want == 'failed' and not is_failure:
        out.append(f'{path}: {name}: not a failure (status, error, '
                   f'exit-code)')
    if out:
        out.append(f'{path}: {text}')
    return out


def main():
    if len(sys.argv) < 4 or len(sys.argv) % 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = []
    for spec, path in zip(sys.argv[2::2], sys.argv[3::2]):
        errors += check(schema['$defs'], spec, path)
    for line in errors:
        print(line, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == '__main__':
    main()
