"""`python -m medr1.train -f params/X.yaml`: the worker entry that `accelerate launch --module` runs."""

import sys

from medr1.train.recipe import train_from_cli

sys.exit(train_from_cli())
