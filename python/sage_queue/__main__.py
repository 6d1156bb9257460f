"""``python -m sage_queue ...`` runs the sage-queue command line (see cli.py)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
