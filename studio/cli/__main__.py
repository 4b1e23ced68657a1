"""`python -m studio.cli`: the same as the `mini-studio` console script."""

from studio.cli.main import main

if __name__ == "__main__":
    main()
