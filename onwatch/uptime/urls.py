from django.urls import path, re_path

from onwatch.uptime import ping_views, views
from onwatch.uptime import status_views as sv

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

# Status pages: public pages and badges (no sign-in), and the pages that manage them.
urlpatterns += [
    path("status/<slug:slug>/", sv.public_page, name="status_page"),
    path("status/<slug:slug>/badge/<int:item>.svg", sv.state_badge, name="status_badge"),
    path(
        "status/<slug:slug>/badge/<int:item>/uptime.svg",
        sv.uptime_badge,
        name="status_badge_uptime",
    ),
    path("status-pages/", sv.page_list, name="status_pages"),
    path("status-pages/add/", sv.page_add, name="status_page_add"),
    path("status-pages/<int:pk>/", sv.page_edit, name="status_page_edit"),
    path("status-pages/<int:pk>/delete/", sv.page_delete, name="status_page_delete"),
]

# The monitors' pages (views.py).
urlpatterns += [
    path("monitors/", views.monitor_list, name="monitors"),
    path("monitors/add/", views.monitor_add, name="monitor_add"),
    path("monitors/add/<str:kind>/", views.monitor_add_kind, name="monitor_add_kind"),
    path("monitors/<int:pk>/", views.monitor_detail, name="monitor_detail"),
    path("monitors/<int:pk>/edit/", views.monitor_edit, name="monitor_edit"),
    path("monitors/<int:pk>/pause/", views.monitor_pause, name="monitor_pause"),
    path("monitors/<int:pk>/resume/", views.monitor_resume, name="monitor_resume"),
    path("monitors/<int:pk>/delete/", views.monitor_delete, name="monitor_delete"),
]
