"""What a provider API is: how it authenticates and which client APIs it speaks natively, at which path.

Pure data. A *provider API* is a wire protocol family (OpenAI, Anthropic, Azure OpenAI); a *provider* is a
vendor name from the config (`groq/llama-3.3-70b`) that speaks one of them at a known host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from plano_extproc.translation import Dialect

Headers = tuple[tuple[str, str], ...]


def bearer(key: str) -> Headers:
    return (("authorization", f"Bearer {key}"),)


@dataclass(frozen=True, slots=True, eq=False)
class ProviderApi:
    name: str
    #: the access key -> the headers that carry it
    auth: Callable[[str], Headers]
    #: client API name -> the path suffix under the provider's version prefix (e.g. "/chat/completions");
    #: a client API not listed here is not spoken natively
    native: Mapping[str, str]
    #: headers every request carries (API versions)
    fixed_headers: Headers = ()
    #: the header names `auth` sets (removed before another provider's attempt)
    auth_header_names: tuple[str, ...] = ("authorization",)
    #: request headers of this API family that clients may send and that mean something only to it
    feature_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class Provider:
    """A vendor name as written in `model: <provider>/<id>` or `provider_interface`."""

    api: ProviderApi
    #: public API host, None when `base_url` is required
    host: str | None
    #: the version prefix of its paths on that host ("/v1", "/openai/v1", "/v1beta/openai")
    prefix: str = "/v1"
    #: a path template used instead of prefix + suffix (Azure: the deployment in the path)
    path_template: Mapping[str, str] = field(default_factory=dict)
    #: a query string every request carries (Azure: api-version)
    default_query: str = ""
    #: what its implementation of the API accepts, for translated requests
    dialect: Dialect = field(default_factory=Dialect)

    @property
    def requires_base_url(self) -> bool:
        return self.host is None


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path_prefix: str
    query: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def host_header(self, override: str | None = None) -> str:
        """The Host a provider expects: `override` (http_host), else host, with the port when not the default."""
        if override:
            return override
        return self.host if self.port == (443 if self.tls else 80) else f"{self.host}:{self.port}"


def endpoint_of(provider: Provider, base_url: str | None) -> Endpoint:
    """The network endpoint of a provider: its base_url when given, else its public API host over TLS."""
    if base_url:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return Endpoint(parts.scheme, parts.hostname or "", port, parts.path.rstrip("/"), parts.query)
    if provider.host is None:
        raise ValueError("this provider needs a base_url")
    return Endpoint("https", provider.host, 443, "")
