"""What the CLI tests' Python checkers share: one way to fail (one line on
stderr naming the checker, exit 1), to read a JSON file, and to tell an
integer from a boolean (json gives True for true, and bool is an int).

Import it from a checker in this directory after setting
sys.dont_write_bytecode, so that no __pycache__ is left in the source tree.
Python 3 standard library only."""
import json
import os
import sys

PROG = os.path.basename(sys.argv[0]).removesuffix('.py')


def die(msg):
    print(f'{PROG}: {msg}', file=sys.stderr)
    sys.exit(1)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def load(path, who=None, array=False):
    """The JSON in PATH; WHO names the tool that wrote it in messages.  With
    ARRAY, anything but a JSON array is refused too."""
    prefix = f'{who}: ' if who else ''
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        die(f'{prefix}cannot parse {path}: {e}')
    if array and not isinstance(data, list):
        die(f'{prefix}expected a JSON array, got {type(data).__name__}')
    return data
