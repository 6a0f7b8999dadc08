"""resolver: customer identity resolution from CRM and CDP exports."""

__version__ = "0.1.0"
