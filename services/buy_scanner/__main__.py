"""`python -m services.buy_scanner`"""

from services.buy_scanner import SPEC
from services.common import main

if __name__ == "__main__":
    main(SPEC)
