"""`python -m supmae.prepare_dataset`: dataset preparation, kept at this path for the command. The code lives in
`supmae.data.prepare`."""

import sys

from .data.prepare import main, prepare


__all__ = ["main", "prepare"]

if __name__ == "__main__":
    sys.exit(main())
