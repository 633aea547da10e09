"""`python -m services.scout`"""

from services.common import main
from services.scout import SPEC

if __name__ == "__main__":
    main(SPEC)
