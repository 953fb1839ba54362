from django.contrib import admin
from django.urls import include, path

from onwatch import api
from onwatch.web import views as web

urlpatterns = [
    path("", web.dashboard, name="dashboard"),
    path("health/", web.health, name="health"),
    path("favicon.ico", web.favicon, name="favicon"),
    path("", include("onwatch.accounts.urls")),
    path("", include("onwatch.alerts.urls")),
    path("", include("onwatch.core.urls")),
    path("", include("onwatch.uptime.urls")),
    path("", include("onwatch.backups.urls")),
    path("", include("onwatch.deploys.urls")),
    path("", include("onwatch.errors.urls")),
    # The typed API (monitors, policies, incidents, maintenance) beside the plain views
    # of core/urls.py at api/v1/channels|jobs|audit/.
    path("api/v1/", api.urls()),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]

# A Host onwatch does not answer to gets a page that says which address it does answer to.
handler400 = "onwatch.web.views.bad_request"
