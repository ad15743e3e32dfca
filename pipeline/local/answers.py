"""An answer made in this process for a botocore client, in place of one from the network
(botocore's ``before-send`` event takes the first answer a handler returns)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.awsrequest import AWSResponse


class _Body:
    """A response body with the two ways botocore reads one."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def answer(url: str, status: int, headers: Mapping[str, str], body: bytes) -> AWSResponse:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    answered = HTTPHeaders()
    for name, value in headers.items():
        answered[name] = value
    return AWSResponse(url, status, answered, _Body(body))
