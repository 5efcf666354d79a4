"""Run the CLI as `python -m ikomm`."""

from ikomm.cli import main

main()
