import gc
import os

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onwatch.settings")
django_application = get_asgi_application()

# Imported once Django is set up: the fast routes the apps registered (heartbeat pings),
# in front of Django.
from onwatch.core.ingest.app import Ingest  # noqa: E402
from onwatch.core.ingest.request import App  # noqa: E402

application: App = Ingest(django_application)
if settings.DOMAIN:
    from onwatch.core.proxied import ProxyGate

    application = ProxyGate(application, settings.PROXY_TOKEN, settings.TRUSTED_PROXIES)

# Every view, loaded now rather than by the first request: with several web workers they
# are then forked from this one copy and share it (onwatch/prefork.py).
get_resolver().url_patterns  # noqa: B018  (a cached property: reading it imports them)

# Everything loaded so far lives as long as the process: out of the collector's sight,
# so a full collection under load walks only what requests made, not all of Django
# (pauses of tens of ms otherwise, felt by every request waiting at that moment).
gc.collect()
gc.freeze()
