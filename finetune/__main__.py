"""`python -m finetune ...`: the same as `voice finetune ...`."""

import sys

from voice.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
