"""`python -m supmae.convert` (and `supmae-convert`): the checkpoint converter, kept at this path for the command.
The code lives in `supmae.interop.convert`."""

from .interop.convert import cli, convert, main, save_converted


__all__ = ["cli", "convert", "main", "save_converted"]

if __name__ == "__main__":
    cli()
