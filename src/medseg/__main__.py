"""`python -m medseg ...` (also what `torchrun -m medseg` will use)."""
import sys

from .cli import main

sys.exit(main())
