"""A news feed (NEWS_FEED_URL): RSS 2.0, Atom, or JSON `{"items": [{"id", "title", "url", "published_at"}]}`.

`parse_feed` is pure: bytes in, articles out; the format is told by the first non-blank byte and the root tag.
The feed is untrusted input: expat >= 2.4.1 (bundled with Python 3.11) refuses entity-expansion bombs, and the
HTTP client caps the body size.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Protocol

from services.clients.config import ClientConfig
from services.clients.http import HttpClient, OutsideError, http_client

SYSTEM = "news feed"
ATOM = "{http://www.w3.org/2005/Atom}"


@dataclass(frozen=True, slots=True)
class Article:
    id: str  # the feed's guid/id, else a hash of the link: stable across fetches
    title: str
    url: str
    published: str | None


class NewsSource(Protocol):
    async def fetch(self) -> list[Article]: ...


def _article(ident: str | None, title: str | None, url: str | None, published: str | None) -> Article | None:
    title, url = (title or "").strip(), (url or "").strip()
    if not title and not url:
        return None
    key = (ident or "").strip() or hashlib.sha256((url or title).encode()).hexdigest()[:32]
    return Article(key, title, url, (published or "").strip() or None)


def _rss(root: ET.Element) -> list[Article | None]:
    return [
        _article(item.findtext("guid"), item.findtext("title"), item.findtext("link"), item.findtext("pubDate"))
        for item in root.iter("item")
    ]


def _atom(root: ET.Element) -> list[Article | None]:
    found = []
    for entry in root.iter(f"{ATOM}entry"):
        link = entry.find(f"{ATOM}link")
        href = link.get("href") if link is not None else None
        published = entry.findtext(f"{ATOM}published") or entry.findtext(f"{ATOM}updated")
        found.append(_article(entry.findtext(f"{ATOM}id"), entry.findtext(f"{ATOM}title"), href, published))
    return found


def _json_items(data: Any) -> list[Article | None]:
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise OutsideError(f"{SYSTEM}: JSON feed has no 'items' list")
    return [
        _article(str(i.get("id") or ""), i.get("title"), i.get("url"), i.get("published_at"))
        for i in items
        if isinstance(i, dict)
    ]


def parse_feed(body: bytes) -> list[Article]:
    """Articles of an RSS, Atom or JSON feed, in feed order, without entries that have neither title nor link."""
    text = body.lstrip()
    try:
        if text[:1] in (b"{", b"["):
            found = _json_items(json.loads(text))
        else:
            root = ET.fromstring(text)
            found = _atom(root) if root.tag == f"{ATOM}feed" else _rss(root)
    except (ET.ParseError, ValueError) as exc:
        raise OutsideError(f"{SYSTEM}: cannot parse the feed ({exc})") from None
    return [a for a in found if a is not None]


class HttpNewsFeed:
    def __init__(self, http: HttpClient) -> None:
        self.http = http

    @classmethod
    def from_config(cls, config: ClientConfig) -> HttpNewsFeed:
        config.require("news_feed_url")
        return cls(http_client(SYSTEM, config.news_feed_url, None, config.outside_timeout_sec))

    async def fetch(self) -> list[Article]:
        return parse_feed((await self.http.request("GET", "")).body)
