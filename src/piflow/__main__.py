"""``python -m piflow``: the same CLI as the ``piflow`` console script (handy in venvs and subprocesses)."""

from piflow.cli import main

if __name__ == "__main__":
    main()
