"""`voice serve`: live calls in over Twilio, AudioSocket and raw WebSockets; events out."""

from voice.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str):
    # Starlette is imported only when the app is built, so `voice --help` stays fast.
    if name == "create_app":
        from voice.server.app import create_app

        return create_app
    raise AttributeError(name)
