#!/usr/bin/env python3
"""Many copy-faults-check.py checks in one Python process.

  copy-faults-batch.py < CHECKS

Each line of CHECKS is LABEL, then the arguments of one
copy-faults-check.py run, separated by tabs.  Every check runs exactly as
copy-faults-check.py would run it alone; for each one that fails, one line
"LABEL: MESSAGE" goes to stderr.  Exit 1 if any failed, 0 otherwise (an
empty CHECKS is no failure).

copy-faults.bats runs a check per fault point; Python's start-up costs
more than the check itself, so it collects them and runs them here once.
Python 3 standard library only."""
import contextlib
import importlib.util
import io
import os
import sys
sys.dont_write_bytecode = True   # no __pycache__ in the source tree

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    'copy_faults_check', os.path.join(HERE, 'copy-faults-check.py'))
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

bad = 0
for line in sys.stdin:
    line = line.rstrip('\n')
    if not line:
        continue
    label, *args = line.split('\t')
    sys.argv = ['copy-faults-check.py', *args]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            check.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    if code:
        bad += 1
        print(f'{label}: {err.getvalue().strip()}', file=sys.stderr)
sys.exit(1 if bad else 0)
