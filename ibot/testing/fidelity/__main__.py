import sys

from ibot.testing.fidelity import main

sys.exit(main())
