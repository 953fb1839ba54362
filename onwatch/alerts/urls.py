from django.urls import path

from onwatch.alerts import incident_views as iv
from onwatch.alerts import views

urlpatterns = [
    path("channels/", views.channels, name="channels"),
    path("channels/add/", views.channel_add, name="channel_add"),
    path("channels/mine/", views.own_channel, name="own_channel"),
    path("channels/mine/test/", views.own_channel_test, name="own_channel_test"),
    path("channels/mine/remove/", views.own_channel_remove, name="own_channel_remove"),
    path("channels/<int:pk>/", views.channel_edit, name="channel_edit"),
    path("channels/<int:pk>/delete/", views.channel_delete, name="channel_delete"),
    path("channels/<int:pk>/test/", views.channel_test, name="channel_test"),
    path("deliveries/", views.deliveries, name="deliveries"),
    path("api/v1/channels/", views.api_channels, name="api_channels"),
]

# Incidents, escalation policies and maintenance windows (incident_views.py).
urlpatterns += [
    path("incidents/", iv.incident_list, name="incidents"),
    path("incidents/<int:pk>/", iv.incident_detail, name="incident_detail"),
    path("incidents/<int:pk>/acknowledge/", iv.incident_acknowledge, name="incident_ack"),
    path("incidents/<int:pk>/resolve/", iv.incident_resolve, name="incident_resolve"),
    path("incidents/<int:pk>/note/", iv.incident_note, name="incident_note"),
    path("policies/", iv.policy_list, name="policies"),
    path("policies/add/", iv.policy_add, name="policy_add"),
    path("policies/<int:pk>/", iv.policy_edit, name="policy_edit"),
    path("policies/<int:pk>/delete/", iv.policy_delete, name="policy_delete"),
    path("maintenance/", iv.maintenance_list, name="maintenance"),
    path("maintenance/add/", iv.maintenance_add, name="maintenance_add"),
    path("maintenance/<int:pk>/", iv.maintenance_edit, name="maintenance_edit"),
    path("maintenance/<int:pk>/delete/", iv.maintenance_delete, name="maintenance_delete"),
]
