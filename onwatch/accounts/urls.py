from django.urls import path

from onwatch.accounts import views

urlpatterns = [
    path("invite/<str:token>/", views.invite, name="invite"),
    path("members/sign-ins/", views.sign_in_activity, name="sign_in_activity"),
    # Beside allauth's enrolment pages, so an account still enrolling may reach it.
    path("accounts/2fa/totp/new-secret/", views.new_totp_secret, name="new_totp_secret"),
]
