"""`python -m esupdater` is the `esupdater` command."""

from esupdater.cli import main

main()
