"""Shared fixtures: real servers on loopback, one import line per fake module."""

# Each fake module under tests/fakes/ defines its fixtures; they are made visible here.
from tests.fakes.dns import dns_server  # noqa: F401
from tests.fakes.hubspot import hubspot_api  # noqa: F401
from tests.fakes.net import backoff_first_s, net, quick_backoff  # noqa: F401
from tests.fakes.sendgrid import sendgrid_api  # noqa: F401
from tests.fakes.smtp import smtp_server, smtp_servers  # noqa: F401
from tests.fakes.webhook import webhook_receiver  # noqa: F401
