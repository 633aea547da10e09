"""News crawler: fetches the news feed and keeps each article once (queue `news-crawler`)."""

from services.common import Route, ServiceSpec
from services.news_crawler.crawl import CrawlParams, build

SPEC = ServiceSpec("news_crawler", (Route("news-crawler", CrawlParams, build),), needs=("news_feed_url",))
