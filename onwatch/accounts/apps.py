from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "onwatch.accounts"
    label = "onwatch_accounts"

    def ready(self) -> None:
        from onwatch.accounts import signals  # noqa: F401  (audit receivers)
