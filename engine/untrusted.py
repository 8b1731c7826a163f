"""Text from outside (SMTP replies, socket errors), made safe to keep, print and serialise.

aiosmtplib decodes replies with `surrogateescape`, so a server that answers with bytes that are
not UTF-8 hands us lone surrogates: they cannot be encoded as UTF-8, so one such reply would make
JSON output, the HTTP API and the store fail. Everything a server says passes through
`clean_text()` where it enters the engine; nothing downstream needs to care.
"""

from __future__ import annotations

import re

__all__ = ["MAX_REPLY_CHARS", "clean_text"]

#: Longest reply text we keep: enough for any real multi-line refusal, bounded for the store.
MAX_REPLY_CHARS = 2000
# C0 controls but line feed, DEL, C1 controls; and the bidi overrides that make text lie
# about its order when displayed (Trojan Source, CVE-2021-42574).
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_ELLIPSIS = "…"


def clean_text(text: str, *, limit: int = MAX_REPLY_CHARS) -> str:
    """Return `text` as valid UTF-8 without control characters, at most `limit` characters.

    Bytes that were not UTF-8 (lone surrogates from `surrogateescape`) become U+FFFD, as a
    strict decoder with errors="replace" would have made them; line feeds are kept.
    """
    if not text.isascii():
        # Surrogates surrogateescape cannot have made (outside \udc80-\udcff) would not encode.
        text = _OTHER_SURROGATES.sub("\ufffd", text)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _CONTROLS.sub("", text.replace("\t", " "))
    if len(text) > limit:
        text = text[: limit - 1] + _ELLIPSIS
    return text
