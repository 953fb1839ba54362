from django.urls import path

from onwatch.backups import views

urlpatterns = [
    path("backups/", views.plans, name="backups"),
    path("backups/plans/<int:pk>/", views.plan_detail, name="backup_plan"),
]
