"""`python -m services.maintenance`"""

from services.common import main
from services.maintenance import SPEC

if __name__ == "__main__":
    main(SPEC)
