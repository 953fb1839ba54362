from django.urls import path

from onwatch.backups import restore_views, setup_views, views

urlpatterns = [
    path("backups/", views.plans, name="backups"),
    path("backups/plans/add/", views.plan_add, name="backup_plan_add"),
    path("backups/plans/<int:pk>/", views.plan_detail, name="backup_plan"),
    path("backups/plans/<int:pk>/edit/", views.plan_edit, name="backup_plan_edit"),
    path("backups/plans/<int:pk>/delete/", views.plan_delete, name="backup_plan_delete"),
    path("backups/plans/<int:pk>/run/", views.plan_run, name="backup_plan_run"),
    path("backups/plans/<int:pk>/drill/", views.plan_drill, name="backup_plan_drill"),
    path(
        "backups/plans/<int:pk>/restore/", restore_views.restore_start, name="backup_restore_start"
    ),
    path("backups/restores/<int:pk>/", restore_views.restore_detail, name="backup_restore"),
]

# Where copies go, and what is backed up (setup_views.py).
urlpatterns += [
    path("backups/repositories/", setup_views.repositories, name="backup_repositories"),
    path("backups/repositories/add/", setup_views.repository_add, name="backup_repository_add"),
    path(
        "backups/repositories/<int:pk>/",
        setup_views.repository_detail,
        name="backup_repository",
    ),
    path(
        "backups/repositories/<int:pk>/edit/",
        setup_views.repository_edit,
        name="backup_repository_edit",
    ),
    path(
        "backups/repositories/<int:pk>/delete/",
        setup_views.repository_delete,
        name="backup_repository_delete",
    ),
    path(
        "backups/repositories/<int:pk>/connect/",
        setup_views.repository_connect,
        name="backup_repository_connect",
    ),
    path(
        "backups/repositories/<int:pk>/forget-host-key/",
        setup_views.repository_forget_host_key,
        name="backup_repository_forget_host_key",
    ),
    path(
        "backups/repositories/<int:pk>/recovery-kit/",
        setup_views.repository_kit,
        name="backup_repository_kit",
    ),
    path("backups/sources/", setup_views.sources, name="backup_sources"),
    path("backups/sources/add/", setup_views.source_add, name="backup_source_add"),
    path(
        "backups/sources/add/<str:kind>/",
        setup_views.source_add_kind,
        name="backup_source_add_kind",
    ),
    path("backups/sources/<int:pk>/edit/", setup_views.source_edit, name="backup_source_edit"),
    path(
        "backups/sources/<int:pk>/delete/",
        setup_views.source_delete,
        name="backup_source_delete",
    ),
]
