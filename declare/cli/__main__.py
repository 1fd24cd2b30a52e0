"""`python -m skyform.cli` runs the CLI (handy where the console script is not on PATH)."""

from skyform.cli import main

raise SystemExit(main())
