"""`python -m magv`: the same command line as the `magv` script."""

from magv.cli import entry

if __name__ == "__main__":
    entry()
