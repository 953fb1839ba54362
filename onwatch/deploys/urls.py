from django.urls import path

from onwatch.deploys import deploy_views, hostviews, views, webhooks

urlpatterns = [
    path("services/", views.service_list, name="services"),
    path("services/add/", views.service_add, name="service_add"),
    path("services/<int:pk>/", views.service_detail, name="service_detail"),
    path("services/<int:pk>/edit/", views.service_edit, name="service_edit"),
    path("services/<int:pk>/secrets/", views.service_secret, name="service_secret"),
    path(
        "services/<int:pk>/secrets/remove/",
        views.service_secret_remove,
        name="service_secret_remove",
    ),
    path(
        "services/<int:pk>/forget-host-key/",
        views.service_forget_host_key,
        name="service_forget_host_key",
    ),
    path("services/<int:pk>/delete/", views.service_delete, name="service_delete"),
    path("services/<int:pk>/run/", views.service_run, name="service_run"),
    path(
        "services/<int:pk>/webhook-secret/",
        views.service_webhook_secret,
        name="service_webhook_secret",
    ),
    path("services/<int:pk>/domain/", deploy_views.service_domain, name="service_domain"),
    path("services/<int:pk>/watch/", deploy_views.service_watch, name="service_watch"),
    path("services/<int:pk>/hosts/", deploy_views.service_hosts, name="service_hosts"),
    path("services/<int:pk>/deploy/", deploy_views.service_deploy, name="service_deploy"),
    path("services/<int:pk>/rollback/", deploy_views.service_rollback, name="service_rollback"),
    path("pipelines/<int:pk>/", views.pipeline_detail, name="pipeline_detail"),
    path("deploys/<int:pk>/", deploy_views.deploy_detail, name="deploy_detail"),
    path(
        "releases/<int:pk>/no-rollback/",
        deploy_views.release_no_rollback,
        name="release_no_rollback",
    ),
    path("hooks/deploys/<int:pk>/", webhooks.hook, name="deploy_hook"),
    path("hosts/", hostviews.host_list, name="hosts"),
    path("hosts/add/", hostviews.host_add, name="host_add"),
    path("hosts/<int:pk>/", hostviews.host_detail, name="host_detail"),
    path("hosts/<int:pk>/edit/", hostviews.host_edit, name="host_edit"),
    path("hosts/<int:pk>/check/", hostviews.host_check, name="host_check"),
    path("hosts/<int:pk>/forget-key/", hostviews.host_forget_key, name="host_forget_key"),
    path("hosts/<int:pk>/remove/", hostviews.host_remove, name="host_remove"),
]
