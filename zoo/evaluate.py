"""``python -m zoo.evaluate``: an alias of ``zoo evaluate`` (:mod:`zoo.evaluation.cli`)."""

from zoo.evaluation.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
