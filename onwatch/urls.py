from django.contrib import admin
from django.urls import include, path

from onwatch.web import views as web

urlpatterns = [
    path("", web.dashboard, name="dashboard"),
    path("health/", web.health, name="health"),
    path("", include("onwatch.accounts.urls")),
    path("", include("onwatch.alerts.urls")),
    path("", include("onwatch.core.urls")),
    path("", include("onwatch.uptime.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
