"""`python -m services.news_crawler`"""

from services.common import main
from services.news_crawler import SPEC

if __name__ == "__main__":
    main(SPEC)
