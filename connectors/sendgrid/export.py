"""Reading whole lists: the contacts export API, its files, and each row as a Contact.

Search returns at most 50 matches and cannot page a list, so lists are exported: POST an
export, poll it until ready, download every file it names, read each row once per pull.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..base import Contact
from ..errors import RetriableConnectorError
from ..fields import FIELDS, FieldSpec
from .formats import parse_time, read_back, rows_of_export
from .http import SendGridHttp
from .provisioning import CustomField

log = logging.getLogger(__name__)

_EXPORTS_PATH = "/v3/marketing/contacts/exports"
_MEBIBYTE = 1 << 20


async def export_urls(
    http: SendGridHttp, list_ids: tuple[str, ...], *, file_type: str
) -> list[str]:
    """Return the download URLs of a fresh export of the lists (all contacts when none).

    The export is asked to split its files at the size the download cap allows (SendGrid's
    `max_file_size`, in MB), so a large list comes as several files, never one too big to read.
    """
    request: dict[str, Any] = {
        "file_type": file_type,
        "max_file_size": max(1, math.floor(http.limits.max_file_bytes / _MEBIBYTE)),
    }
    if list_ids:
        request["list_ids"] = list(list_ids)
    response = await http.call("POST", _EXPORTS_PATH, bucket="exports", json_body=request)
    export_id = str(response.json()["id"])
    status: dict[str, Any] = {}
    async for waited in http.poll_delays():
        path = f"{_EXPORTS_PATH}/{export_id}"
        status = (await http.call("GET", path, bucket="export_status")).json()
        state = status.get("status")
        if state == "ready":
            urls = [str(url) for url in status.get("urls") or []]
            log.info(
                "%s: export %s ready after %.0fs, %d file(s)",
                http.connector,
                export_id,
                waited,
                len(urls),
            )
            return urls
        if state == "failure":
            why = status.get("message") or "no reason"
            message = f"SendGrid export {export_id} failed: {why}"
            raise RetriableConnectorError(http.connector, message)
    raise RetriableConnectorError(
        http.connector,
        f"SendGrid export {export_id} still {status.get('status', 'pending')} after "
        f"{http.limits.max_poll_s:.0f}s",
        retry_after=http.limits.poll_interval_s,
    )


def contacts_in(
    path: Path, fields: Mapping[str, CustomField], seen: set[str], *, connector: str
) -> Iterator[Contact]:
    """Yield the contacts of one export file, each contact id once per pull (`seen`)."""
    names = {spec.name.casefold(): spec for spec in FIELDS}
    ids = {custom.id.casefold(): custom.name for custom in fields.values()}
    keys: dict[str, str] = {}  # column → its casefolded name, worked out once per file
    skipped = 0
    for row in rows_of_export(path):
        contact = contact_from(row, names, ids, keys)
        if contact is None:
            skipped += 1
            continue
        if contact.external_id in seen:
            continue
        seen.add(contact.external_id)
        yield contact
    if skipped:
        log.warning("%s: %d export row(s) had no contact id and were skipped", connector, skipped)


def contact_from(
    row: Mapping[str, Any],
    names: Mapping[str, FieldSpec],
    ids: Mapping[str, str],
    keys: dict[str, str],
) -> Contact | None:
    """Return the Contact an export row describes, or None when it has no contact id."""
    lowered: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            continue  # csv puts surplus cells under None
        folded = keys.get(key)
        if folded is None:
            folded = keys[key] = str(key).strip().casefold()
        lowered[folded] = value
    contact_id = lowered.get("contact_id") or lowered.get("id")
    if not contact_id:
        return None
    email = str(lowered.get("email") or "").strip().lower() or None
    raw: dict[str, Any] = {key: value for key, value in lowered.items() if key in names}
    custom = lowered.get("custom_fields")
    if isinstance(custom, dict):
        for key, value in custom.items():
            key = str(key).casefold()
            name = key if key in names else ids.get(key, "").casefold()
            if name in names:
                raw[name] = value
    values = {}
    for name, value in raw.items():
        text = read_back(value, names[name].kind)
        if text:
            values[names[name].name] = text
    return Contact(
        external_id=str(contact_id),
        email=email,
        updated_at=parse_time(lowered.get("updated_at")),
        fields=values,
    )
