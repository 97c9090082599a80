"""python -m focalbench == the focalbench command."""

from focalbench.cli import main

main()
