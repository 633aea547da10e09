"""The real crawl: fetch the feed, keep the articles not seen before (an idempotency key per article, so
overlapping fetches, replicas and retries never report one article twice), log each new one."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from services.clients.config import ClientConfig
from services.clients.news import Article, HttpNewsFeed, NewsSource
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings


class CrawlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_items: int = Field(default=200, ge=1, le=10_000, description="articles looked at per fetch")
    seen_ttl_sec: float = Field(default=14 * 86400, gt=0, description="how long an article counts as seen")


def article_key(article: Article) -> str:
    """A bounded idempotency key (feed ids can be long URLs)."""
    return "news-" + hashlib.sha256(article.id.encode()).hexdigest()[:40]


async def crawl(ctx: RunContext, params: CrawlParams, source: NewsSource) -> list[Article]:
    """The new articles of this fetch, in feed order."""
    articles = (await source.fetch())[: params.max_items]
    new = [a for a in articles if await ctx.idempotency.claim(article_key(a), params.seen_ttl_sec)]
    for article in new:
        ctx.log.info("news.article", title=article.title[:300], url=article.url, published=article.published)
    ctx.log.info("news.fetched", fetched=len(articles), new=len(new))
    return new


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    source = HttpNewsFeed.from_config(config)

    async def handle(ctx: RunContext, params: CrawlParams) -> None:
        await crawl(ctx, params, source)

    return handle
