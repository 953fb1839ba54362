from django.urls import path

from onwatch.accounts import views

urlpatterns = [
    path("invite/<str:token>/", views.invite, name="invite"),
]
