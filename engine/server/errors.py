"""The server's one error shape: OpenAI's `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
Every failure a client can see is an ApiError; its message is one sentence that says what to change."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    """400: a request the server understood but cannot take as it is."""
    return ApiError(400, message, code, param)


def server_error(message: str) -> ApiError:
    return ApiError(500, message, "server_error", type="server_error")
