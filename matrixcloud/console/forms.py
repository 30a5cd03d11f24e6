"""Console forms: the shape of what a page accepts. Rules live in the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from accounts.choices import Role
from jobs.choices import JobStatus
from models_registry.choices import InstallMode


def _email() -> forms.EmailField:
    return forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autocomplete": "email"}))


def _password(label: str = "Password", autocomplete: str = "current-password") -> forms.CharField:
    return forms.CharField(
        label=label,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": autocomplete}),
    )


class SignupForm(forms.Form):
    name = forms.CharField(label="Your name", max_length=200)
    email = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    password = _password(autocomplete="new-password")
    workspace = forms.CharField(
        label="Workspace name",
        required=False,
        max_length=200,
        help_text="Optional; default: “<your name>'s workspace”.",
    )


class LoginForm(forms.Form):
    email = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    password = _password()


class ForgotForm(forms.Form):
    email = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )


class TokenForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)


class ResetForm(TokenForm):
    password = _password("New password", "new-password")


class InviteAcceptForm(TokenForm):
    name = forms.CharField(
        label="Your name", required=False, max_length=200, help_text="Only for a new account."
    )
    password = _password(
        "Password", "new-password"
    )  # an existing account proves its own; a new one sets it


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email to invite")
    role = forms.ChoiceField(
        label="Role", choices=[(Role.MEMBER, "Member"), (Role.ADMIN, "Admin")], initial=Role.MEMBER
    )


class SandboxForm(forms.Form):
    start_command = forms.CharField(
        label="Start command",
        max_length=4000,
        strip=False,
        help_text="The MCP server's command line, checked against the command policy.",
    )
    ttl_seconds = forms.IntegerField(
        label="Lifetime (seconds)", required=False, min_value=0, help_text="Empty: the maximum."
    )
    env = forms.CharField(
        label="Environment",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One NAME=value per line; secrets only as ${secret:NAME}.",
    )

    def clean_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in self.cleaned_data["env"].splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise forms.ValidationError(f"not NAME=value: {line.strip()!r}")
            env[name.strip()] = value
        return env


class LaunchForm(forms.Form):
    item_id = forms.CharField(widget=forms.HiddenInput)


class ToolCallForm(forms.Form):
    """The no-JavaScript tool call: a name and the arguments as a JSON object."""

    name = forms.CharField(widget=forms.HiddenInput)
    arguments = forms.CharField(
        label="Arguments (JSON object)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )

    def clean_arguments(self) -> dict[str, Any]:
        raw = self.cleaned_data["arguments"].strip() or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("the arguments must be a JSON object")
        return value


class JobFilterForm(forms.Form):
    type = forms.CharField(label="Type", required=False, max_length=64)
    status = forms.ChoiceField(
        label="Status",
        required=False,
        choices=[("", "any"), *[(value, value) for value in JobStatus.values]],
    )
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)


class JoinTokenForm(forms.Form):
    label = forms.CharField(label="Label", required=False, max_length=200)
    max_uses = forms.IntegerField(
        label="Uses", required=False, min_value=1, help_text="How many runtimes may join (1)."
    )
    ttl_minutes = forms.IntegerField(
        label="Valid for (minutes)", required=False, min_value=1, help_text="Empty: 24 hours."
    )


class ProviderForm(forms.Form):
    provider = forms.CharField(
        label="Provider", max_length=64, help_text="e.g. huggingface, openai, anthropic"
    )
    label = forms.CharField(
        label="Label", required=False, max_length=64, help_text="Default: default."
    )
    secret = forms.CharField(
        label="Key",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; only its last 4 characters are ever shown.",
    )
    usable_by_members = forms.BooleanField(
        label="Members may use it",
        required=False,
        help_text="Members' sandboxes and agent runs may use this key (Owners and Admins "
        "always may).",
    )


class ModelSearchForm(forms.Form):
    q = forms.CharField(label="Search Hugging Face", required=False, max_length=200)
    task = forms.CharField(
        label="Task", required=False, max_length=64, help_text="e.g. text-generation"
    )


class ImportForm(forms.Form):
    external_id = forms.CharField(
        label="Model id", max_length=200, help_text="e.g. Qwen/Qwen2.5-7B-Instruct"
    )
    branch = forms.CharField(
        label="Branch", required=False, max_length=200, help_text="Default main."
    )


class AttachForm(forms.Form):
    runtime_id = forms.ChoiceField(label="Runtime")
    install_mode = forms.ChoiceField(
        label="Install mode", choices=InstallMode.choices, initial=InstallMode.PULL_FROM_SOURCE
    )
    serving_engine = forms.CharField(
        label="Serving engine",
        required=False,
        max_length=40,
        help_text="e.g. vLLM, SGLang, Ollama",
        widget=forms.TextInput(attrs={"list": "engines"}),
    )
    path = forms.CharField(
        label="Model folder", required=False, max_length=1000, help_text="mount volume only"
    )
    endpoint_url = forms.CharField(
        label="Endpoint URL", required=False, max_length=1000, help_text="external endpoint only"
    )

    def __init__(self, *args: Any, runtimes: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["runtime_id"].choices = runtimes  # type: ignore[attr-defined]


class ShellForm(forms.Form):
    command = forms.CharField(
        label="Command",
        max_length=4000,
        strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
