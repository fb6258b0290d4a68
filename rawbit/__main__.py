"""`python -m rawbit` is the `rawbit` command."""

from .cli import main

main(prog_name="rawbit")
