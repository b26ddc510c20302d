"""`python -m services.cli`: the console script without its wrapper."""

from services.cli import main

main()
