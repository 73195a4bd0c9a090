"""``python -m customer_session``: the same as the ``customer-session`` command."""

import sys

from customer_session.cli import main

if __name__ == "__main__":
    sys.exit(main())
