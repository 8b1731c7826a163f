"""SendGrid Marketing Campaigns as a source and a sink: list contacts in, verification fields out.

Whole lists are read through the contacts export API, fields are written with the asynchronous
upsert whose import jobs are polled so errored rows are reported, never dropped. One module per
concern, re-exported here:

    formats.py       field values out and back (canonical text), export rows, errors files
    http.py          the API and file clients under the shared HTTP policy; error mapping
    provisioning.py  lists and custom fields: resolved, created when missing
    export.py        export → poll → files → Contacts
    upsert.py        chunks → PUT → import jobs → written or failed, per record
    connector.py     SendGridConnector, which ties them together
"""

from .connector import DEFAULT_BASE_URL, MAX_EXPORT_FILE_BYTES, SendGridConnector
from .formats import FIELD_TYPES, read_back, wire_value
from .http import NEEDED_PERMISSION
from .provisioning import CUSTOM_FIELD_LIMIT, CustomField
from .upsert import MAX_UPSERT_BYTES, MAX_UPSERT_CONTACTS

__all__ = [
    "CUSTOM_FIELD_LIMIT",
    "DEFAULT_BASE_URL",
    "FIELD_TYPES",
    "MAX_EXPORT_FILE_BYTES",
    "MAX_UPSERT_BYTES",
    "MAX_UPSERT_CONTACTS",
    "NEEDED_PERMISSION",
    "CustomField",
    "SendGridConnector",
    "read_back",
    "wire_value",
]
