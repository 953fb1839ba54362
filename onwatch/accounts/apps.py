from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "onwatch.accounts"
    label = "onwatch_accounts"

    def ready(self) -> None:
        from django.contrib import admin

        from onwatch.accounts import signals  # noqa: F401  (audit receivers)
        from onwatch.accounts.mfa_secrets import reencrypt_mfa_secrets
        from onwatch.accounts.views import admin_login
        from onwatch.core.keys import register_reencrypt

        register_reencrypt(reencrypt_mfa_secrets)
        # The admin has no sign-in of its own: it sits behind allauth's, with MFA.
        admin.site.login = admin_login  # type: ignore[method-assign]
