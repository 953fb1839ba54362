import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onwatch.settings")
django_application = get_asgi_application()

# Imported once Django is set up: the hot path of heartbeat pings, in front of Django.
from onwatch.uptime.fastping import FastPings  # noqa: E402

application = FastPings(django_application)
