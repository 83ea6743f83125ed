"""`python -m charrnn` and `torchrun -m charrnn train ...`."""

from charrnn.cli import main

if __name__ == "__main__":
    main()
