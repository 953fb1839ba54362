from django.urls import path

from onwatch.core import api, views

urlpatterns = [
    path("members/", views.members, name="members"),
    path("members/invite/", views.member_invite, name="member_invite"),
    path("members/<int:pk>/role/", views.member_role, name="member_role"),
    path("members/<int:pk>/remove/", views.member_remove, name="member_remove"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("ssh-keys/", views.ssh_keys, name="ssh_keys"),
    path("audit/", views.audit_log, name="audit_log"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/log/", views.job_log, name="job_log"),
    path("jobs/<int:pk>/events/", views.job_events, name="job_events"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("api/v1/jobs/", api.jobs, name="api_jobs"),
    path("api/v1/jobs/<int:pk>/", api.job, name="api_job"),
    path("api/v1/jobs/<int:pk>/cancel/", api.job_cancel, name="api_job_cancel"),
    path("api/v1/audit/", api.audit, name="api_audit"),
    path("api/v1/ssh-keys/", api.ssh_keys, name="api_ssh_keys"),
    path("api/v1/ssh-keys/<int:pk>/remove/", api.ssh_key_remove, name="api_ssh_key_remove"),
]
