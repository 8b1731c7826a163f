"""Why a connector could not do its work, sorted by what the pipeline should do about it.

    ConnectorError(connector)                 `except ConnectorError` catches all of these
    ├── RetriableConnectorError(retry_after)  429, 5xx, network: back off, keep the cursor
    ├── FatalConnectorError                   other 4xx, bad config: end the pass
    │   └── ConnectorAuthError                bad token or missing scope
    └── SkippableRecordError(external_id)     one bad row or contact: log it, move on

Messages never carry tokens, API keys or auth headers.
"""

from __future__ import annotations

from mailprobe.engine.errors import MailprobeError


class ConnectorError(MailprobeError):
    """A connector failed; `connector` names which one."""

    def __init__(self, connector: str, message: str) -> None:
        self.connector = connector
        self.message = message
        super().__init__(connector, message)

    def __str__(self) -> str:
        return f"{self.connector}: {self.message}"


class RetriableConnectorError(ConnectorError):
    """A passing failure (rate limit, server error, network): retry after `retry_after` s."""

    def __init__(self, connector: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(connector, message)
        self.retry_after = retry_after


class FatalConnectorError(ConnectorError):
    """A failure retrying will not fix (bad request, bad configuration): end the pass."""


class ConnectorAuthError(FatalConnectorError):
    """The credentials are wrong or lack a scope; the message says which to fix."""


class SkippableRecordError(ConnectorError):
    """One record cannot be used; the rest of the pass goes on."""

    def __init__(self, connector: str, message: str, *, external_id: str) -> None:
        super().__init__(connector, message)
        self.external_id = external_id
