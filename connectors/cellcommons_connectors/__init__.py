"""Built-in sync connectors, each registered under the `cellcommons.connectors` entry-point group."""
