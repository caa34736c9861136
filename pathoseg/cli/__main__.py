"""``python -m pathoseg.cli``: the command line."""

from pathoseg.cli import main

main()
