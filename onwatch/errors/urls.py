from django.urls import path

from onwatch.errors import ingest_views, issue_views, views

urlpatterns = [
    path("errors/", views.project_list, name="errors_projects"),
    path("errors/add/", views.project_add, name="errors_project_add"),
    path("errors/<int:pk>/", views.project_detail, name="errors_project"),
    path("errors/<int:pk>/settings/", views.project_settings, name="errors_settings"),
    path("errors/<int:pk>/rotate-key/", views.project_rotate_key, name="errors_rotate_key"),
    path("errors/<int:pk>/revoke-key/", views.project_revoke_key, name="errors_revoke_key"),
    path("errors/<int:pk>/alerts/", issue_views.project_alerts, name="errors_alerts"),
    path("errors/<int:pk>/issues/", issue_views.issues_bulk, name="errors_issues_bulk"),
    path("errors/issues/<int:pk>/", views.issue_detail, name="errors_issue"),
    path("errors/issues/<int:pk>/state/", issue_views.issue_state, name="errors_issue_state"),
    path("errors/issues/<int:pk>/split/", issue_views.issue_split, name="errors_issue_split"),
    # Sentry's paths, as every SDK builds them from the DSN.
    path("api/<int:project_id>/envelope/", ingest_views.envelope, name="errors_envelope"),
    path("api/<int:project_id>/store/", ingest_views.store, name="errors_store"),
]
