"""``python -m zoo``: the zoo's LightningCLI."""

from zoo.main import main

if __name__ == "__main__":
    main()
