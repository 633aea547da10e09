"""`python -m services.price_monitor`"""

from services.common import main
from services.price_monitor import SPEC

if __name__ == "__main__":
    main(SPEC)
