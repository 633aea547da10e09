"""`python -m services.trading`"""

from services.common import main
from services.trading import SPEC

if __name__ == "__main__":
    main(SPEC)
