"""What a reply says about the server's limits on us, rather than about a recipient.

Owns the words and codes of limit replies: too many connections, too many recipients, too many
refused commands, and the RCPTMAX a server announces in EHLO (RFC 9422). Pure: throttle.py keeps
the limits learned, conversation.py decides when to learn them; what a reply means for the
recipient is replies.classify()'s alone.
"""

from __future__ import annotations

from .result import SmtpReply

#: What servers say when we hold too many sessions with them (Postfix, Exim, Sendmail, Exchange).
_TOO_MANY_CONNECTIONS_WORDS = (
    "too many connections",
    "too many concurrent",
    "too many open connections",
    "concurrent connections",
    "too many sessions",
    "connection limit",
)
#: What servers say when one session carried more recipients than they take (RFC 5321 §4.5.3.1.10).
_TOO_MANY_RECIPIENTS_WORDS = ("too many recipients", "recipient limit")
_TOO_MANY_RECIPIENTS_CODES = ("4.5.3", "5.5.3")
#: What servers say when we, the client, passed their limit per time, not per session
#: (Postfix anvil: "450 4.7.1 Error: too many recipients from 192.0.2.1", "421 4.7.0 ... too
#: many connections from ...", "too much mail from"). A recipient's own rate limit ("the
#: recipient has exceeded message rate limit") is not ours to pace.
_RATE_WORDS = (
    "too many recipients from",
    "too much mail from",
    "too many messages from",
    "too many connections from",
)
#: What servers say when they end the session over the commands they refused.
_ERROR_LIMIT_WORDS = ("too many errors", "too many invalid", "too many unknown", "too many bad")


def is_session_limit(reply: SmtpReply) -> bool:
    """Return True when a RCPT reply limits the session rather than judging the recipient."""
    if reply.code == 421 or is_rate_limit(reply):
        return True
    too_many = _says(reply, _TOO_MANY_RECIPIENTS_WORDS)
    return reply.enhanced_code in _TOO_MANY_RECIPIENTS_CODES or (
        reply.code in (451, 452, 552) and too_many
    )


def is_rate_limit(reply: SmtpReply) -> bool:
    """Return True when a 4xx says we passed the host's limit per time: wait, then ask again."""
    return reply.code // 100 == 4 and _says(reply, _RATE_WORDS)


def is_too_many_connections(reply: SmtpReply) -> bool:
    """Return True when a refusal says we hold too many sessions with the server at once."""
    return _says(reply, _TOO_MANY_CONNECTIONS_WORDS)


def is_error_limit(reply: SmtpReply) -> bool:
    """Return True when the server ends the session over how many of our commands it refused.

    Postfix's smtpd_hard_error_limit ("421 4.7.0 Error: too many errors"), Exim's and others'
    limits on unknown recipients: a dictionary attack looks like this, so stay under it.
    """
    return _says(reply, _ERROR_LIMIT_WORDS)


def is_size_limit(reply: SmtpReply) -> bool:
    """Return True when a limit reply is about how much one session carries, not our pace.

    "Too many recipients" and error limits are cured by smaller sessions, which we learn;
    backing the host off as well would only idle it. A limit per time is not one of them.
    """
    return not is_rate_limit(reply) and (
        reply.enhanced_code in _TOO_MANY_RECIPIENTS_CODES
        or _says(reply, _TOO_MANY_RECIPIENTS_WORDS)
        or is_error_limit(reply)
    )


def rcpt_max(ehlo: SmtpReply | None) -> int | None:
    """Return the recipients per transaction the EHLO reply's LIMITS line allows (RFC 9422)."""
    for line in ehlo.message.splitlines() if ehlo is not None else ():
        words = line.split()
        if not words or words[0].upper() != "LIMITS":
            continue
        for param in words[1:]:
            name, _, value = param.partition("=")
            if name.upper() == "RCPTMAX" and value.isdigit() and int(value) > 0:
                return int(value)
    return None


def _says(reply: SmtpReply, words: tuple[str, ...]) -> bool:
    """Return True when the reply's text contains any of the (lower-case) words."""
    text = reply.message.lower()
    return any(word in text for word in words)
