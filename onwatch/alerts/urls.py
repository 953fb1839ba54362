from django.urls import path

from onwatch.alerts import views

urlpatterns = [
    path("channels/", views.channels, name="channels"),
    path("deliveries/", views.deliveries, name="deliveries"),
]
