from django.urls import path

from onwatch.errors import ingest_views, views

urlpatterns = [
    path("errors/", views.project_list, name="errors_projects"),
    path("errors/add/", views.project_add, name="errors_project_add"),
    path("errors/<int:pk>/", views.project_detail, name="errors_project"),
    path("errors/<int:pk>/settings/", views.project_settings, name="errors_settings"),
    path("errors/<int:pk>/rotate-key/", views.project_rotate_key, name="errors_rotate_key"),
    path("errors/<int:pk>/revoke-key/", views.project_revoke_key, name="errors_revoke_key"),
    path("errors/issues/<int:pk>/", views.issue_detail, name="errors_issue"),
    # Sentry's paths, as every SDK builds them from the DSN.
    path("api/<int:project_id>/envelope/", ingest_views.envelope, name="errors_envelope"),
    path("api/<int:project_id>/store/", ingest_views.store, name="errors_store"),
]
