"""resolver: customer identity resolution from CRM and CDP exports.

The Python API (resolver/api.py), loaded on first use so that `import resolver` stays light:

    import resolver
    result = resolver.resolve("resolver.yaml", data={"crm": frame})
"""

from resolver.version import __version__

_API = ("Config", "ConfigError", "load_config", "config_from_dict", "resolve", "Result", "score_pair", "Waterfall",
        "best_match", "Match")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from resolver import api

        return getattr(api, name)
    raise AttributeError(f"module 'resolver' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
