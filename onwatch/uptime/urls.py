from django.urls import re_path

from onwatch.uptime import ping_views

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# start, fail, log, an exit status; anything else is answered 400 by the view.
ACTION = r"(?:/(?P<action>[^/]+))?/?$"
SLUG = r"[A-Za-z0-9_-]{1,100}"

urlpatterns = [
    # First: a ping key is never shaped like a UUID, so /ping/<uuid>/<x> is always an action.
    re_path(rf"^ping/(?P<code>{UUID}){ACTION}", ping_views.ping, name="ping"),
    re_path(
        rf"^ping/(?P<key>[A-Za-z0-9_-]{{1,40}})/(?P<slug>{SLUG}){ACTION}",
        ping_views.ping_slug,
        name="ping-slug",
    ),
    re_path(r"^ping(?:/.*)?$", ping_views.malformed, name="ping-malformed"),
]
