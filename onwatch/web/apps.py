from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "onwatch.web"
    label = "web"
