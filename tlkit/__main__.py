"""``python -m tlkit`` works like the ``tlkit`` command."""

from tlkit.cli import main

if __name__ == "__main__":
    main()
