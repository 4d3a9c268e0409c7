"""Backend URLs: printing them without secrets, and putting them back together."""

from __future__ import annotations

import urllib.parse


def unsplit(parts: urllib.parse.SplitResult) -> str:
    """urlunsplit() that keeps the ``//`` of a URL without a host (``unix:///path``)."""
    url = urllib.parse.urlunsplit(parts)
    if not parts.netloc and parts.scheme and not url.startswith(f"{parts.scheme}://"):
        url = f"{parts.scheme}://" + url[len(parts.scheme) + 1 :]
    return url


def public_url(url: str) -> str:
    """*url* without its password (and user), for reprs, errors and pickles."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return unsplit(parts._replace(netloc=netloc))
