"""`python -m supmae.visualization`: the reconstruction figure of a checkpoint, kept at this path for the command.
The code lives in `supmae.reports.reconstruction_figure`."""

from .cli import run_script
from .reports.reconstruction_figure import main, reconstruct, reconstruction_figure


__all__ = ["main", "reconstruct", "reconstruction_figure"]

if __name__ == "__main__":
    run_script(main)
