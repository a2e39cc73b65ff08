"""`python -m eventpipe`: the `eventpipe` command where its script is not on PATH (a venv not activated,
`pipx run`, a container's entry point that names the interpreter)."""

import sys

from eventpipe.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
