"""`python -m services.daily_pipeline`"""

from services.common import main
from services.daily_pipeline import SPEC

if __name__ == "__main__":
    main(SPEC)
